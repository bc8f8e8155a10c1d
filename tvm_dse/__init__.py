"""tvm_dse: find the fastest per-node implementation of a CNN for a CPU target, with Apache TVM 0.27.

Entry points: :func:`parse_target` (targets and presets), :func:`load_model` (ONNX or Relax import),
:func:`build_graph` (the tunable nodes and the edges between them), :func:`build_baseline` (TVM's
default build, the reference every plan is checked against), :func:`optimize` (the main job: measure,
search, build, validate, report; its options in :class:`OptimizeOptions`).
"""

from .thread_pool import settle_process

# read by TVM's thread pool when it first starts, so settled before any kernel runs
settle_process()

from .build import BuiltModel, build_baseline  # noqa: E402  (after the thread pool is settled)
from .errors import ModelError, TargetError, TvmDseError, UnsupportedOpError
from .frontend import Model, ModelInput, load_model
from .graph import DseGraph, Vertex, build_graph
from .optimize import OptimizeResult, optimize
from .options import OptimizeOptions
from .plan import Plan
from .target import DseTarget, parse_target
from .timing import Timing
from .validation import ValidationError
from .version import __version__
from .workload import Workload

__all__ = [
    "__version__", "BuiltModel", "DseGraph", "DseTarget", "Model", "ModelError", "ModelInput", "OptimizeOptions",
    "OptimizeResult", "Plan", "TargetError", "Timing", "TvmDseError", "UnsupportedOpError", "ValidationError",
    "Vertex", "Workload", "build_baseline", "build_graph", "load_model", "optimize", "parse_target",
]
