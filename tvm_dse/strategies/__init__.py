"""Convolution strategies: the implementations the search chooses between, one registry for all, and
their kernels as measurement candidates.

Importing this package registers every strategy, and the builder of their candidates with
:mod:`tvm_dse.measure`; see :mod:`.base` for the interface.
"""

from . import dense, depthwise, direct, gemm, quantized, spatial_pack, winograd  # noqa: F401  (registers the strategies)
from .base import Applicability, Decider, Epilogue, Strategy, StrategyLayouts
from .candidate import Candidate, default_decisions, schedule_versions
from .kernel import BuiltKernel, KernelMeasurement, build_kernel, measure_strategy
from .registry import all_strategies, applicable_strategies, get_strategy, register

__all__ = [
    "Applicability", "BuiltKernel", "Candidate", "Decider", "Epilogue", "KernelMeasurement", "Strategy",
    "StrategyLayouts", "all_strategies", "applicable_strategies", "build_kernel", "default_decisions",
    "get_strategy", "measure_strategy", "register", "schedule_versions",
]
