"""tvm_dse: find the fastest per-node implementation of a CNN for a CPU target, with Apache TVM 0.27.

Entry points: :func:`parse_target` (targets and presets), :func:`load_model` (ONNX or Relax import),
:func:`build_graph` (the tunable nodes and the edges between them), :func:`build_baseline` (TVM's
default build, the reference every plan is checked against).
"""

from .build import BuiltModel, build_baseline
from .errors import ModelError, TargetError, TvmDseError, UnsupportedOpError
from .frontend import Model, ModelInput, load_model
from .graph import DseGraph, Vertex, build_graph
from .target import DseTarget, parse_target
from .timing import Timing
from .workload import Workload

__version__ = "0.1.0"

__all__ = [
    "BuiltModel", "DseGraph", "DseTarget", "Model", "ModelError", "ModelInput", "TargetError", "Timing",
    "TvmDseError", "UnsupportedOpError", "Vertex", "Workload", "build_baseline", "build_graph", "load_model",
    "parse_target",
]
