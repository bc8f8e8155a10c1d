"""Convolution strategies: the implementations the search chooses between, one registry for all.

Importing this package registers every strategy; see :mod:`.base` for the interface.
"""

from . import dense, depthwise, direct, gemm, quantized, spatial_pack, winograd  # noqa: F401  (registers the strategies)
from .base import Applicability, Decider, Epilogue, Strategy, StrategyLayouts
from .kernel import BuiltKernel, KernelMeasurement, build_kernel, measure_strategy
from .registry import all_strategies, applicable_strategies, get_strategy, register

__all__ = [
    "Applicability", "BuiltKernel", "Decider", "Epilogue", "KernelMeasurement", "Strategy", "StrategyLayouts",
    "all_strategies", "applicable_strategies", "build_kernel", "get_strategy", "measure_strategy", "register",
]
