"""One strategy on one workload, built on its own: for the conformance suite and for measuring it.

:func:`build_kernel` builds the strategy's scheduled compute (with an optional fused epilogue) and its
weight pre-transform; :class:`BuiltKernel` takes and returns arrays in the model's layouts (NCHW, OIHW),
converting on the way in and out, so every strategy is checked against the same reference.
:func:`measure_strategy` times it on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import tvm
from tvm import s_tir, te

from ..export import export_library
from ..layouts import Layout
from ..quant.scheme import UNCALIBRATED, ActivationQuant
from ..target import DseTarget
from ..timing import Timing
from ..workload import Workload
from .base import Decider, Decisions, Epilogue, Strategy, apply_epilogue
from .registry import get_strategy


def model_shapes(workload: Workload) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(data, weight, output) shapes as the model holds them: NCHW/OIHW, or (N, C)/(C, K)/(N, K) for dense."""
    if workload.op == "dense":
        return ((workload.batch, workload.in_channels), (workload.in_channels, workload.out_channels),
                (workload.batch, workload.out_channels))
    return workload.input_shape, workload.weight_shape, workload.output_shape


@dataclass
class BuiltKernel:
    """A strategy compiled for one workload, epilogue and set of decisions."""

    strategy: Strategy
    workload: Workload
    target: DseTarget
    epilogue: Epilogue
    decisions: Decisions
    kernel: Any  # tvm.runtime.Executable of the scheduled compute
    weight_transform: Any  # tvm.runtime.Executable of the weight pre-transform, built for the host
    packed_weights: tuple[tuple[tuple[int, ...], str], ...] = field(default=())  # (shape, dtype) of each
    quant: ActivationQuant | None = None  # the input's quantization (int8 strategies)

    def _layout(self, which: str) -> Layout:
        return Layout.parse(getattr(self.strategy.layouts(self.workload, self.target), which))

    def arguments(self, data: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
                  residual: np.ndarray | None = None) -> list[tvm.runtime.Tensor]:
        """The kernel's arguments for model-layout inputs (weights pre-transformed, output allocated)."""
        packed = [tvm.runtime.tensor(np.zeros(shape, dtype)) for shape, dtype in self.packed_weights]
        self.weight_transform["main"](tvm.runtime.tensor(np.ascontiguousarray(weight, "float32")), *packed)
        output_layout, data_layout = self._layout("output"), self._layout("data")
        data = np.asarray(data, "float32")
        if data_layout.dtype == "uint8":  # an int8 strategy reads codes: the conversion before it quantizes
            data = (self.quant or UNCALIBRATED).quantize(data)
        arguments = [tvm.runtime.tensor(data_layout.from_nchw(data)), *packed]
        if self.epilogue.bias:
            arguments.append(tvm.runtime.tensor(np.asarray(bias, "float32")))
        if self.epilogue.residual:
            arguments.append(tvm.runtime.tensor(output_layout.from_nchw(np.asarray(residual, "float32"))))
        output_shape = model_shapes(self.workload)[2]
        arguments.append(tvm.runtime.tensor(np.zeros(output_layout.shape(output_shape), "float32")))
        return arguments

    def run(self, data: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
            residual: np.ndarray | None = None) -> np.ndarray:
        """Compute on the host from model-layout arrays; returns the output in NCHW (or (N, K))."""
        arguments = self.arguments(data, weight, bias, residual)
        self.kernel["main"](*arguments)
        return self._layout("output").to_nchw(arguments[-1].numpy())

    def export(self, path: str | Path) -> Path:
        """Write the kernel as a shared library for its target (cross-compiled for aarch64)."""
        return export_library(self.kernel, self.target, path)

    def time(self, arguments: list[tvm.runtime.Tensor], number: int = 10, repeat: int = 5,
             min_repeat_ms: int = 0, warmup: int = 1) -> Timing:
        """Median and spread of ``repeat`` measurements, each the mean of ``number`` runs."""
        for _ in range(warmup):
            self.kernel["main"](*arguments)
        evaluator = self.kernel.mod.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat,
                                                   min_repeat_ms=min_repeat_ms)
        return Timing.from_seconds(list(evaluator(*arguments).results))


def transformed_weights(strategy: Strategy, weight: te.Tensor, workload: Workload, target: DseTarget) -> list[te.Tensor]:
    """The strategy's weight pre-transform of ``weight`` as a list (one tensor, or several for int8 strategies)."""
    transformed = strategy.transform_weight(weight, workload, target)
    return list(transformed) if isinstance(transformed, (tuple, list)) else [transformed]


def packed_weights(strategy: Strategy, workload: Workload, target: DseTarget) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype) of each tensor the strategy's pre-transform makes (what the deployed module stores)."""
    weight = te.placeholder(model_shapes(workload)[1], "float32", name="weight")
    return [(tuple(int(d) for d in t.shape), str(t.dtype))
            for t in transformed_weights(strategy, weight, workload, target)]


def packed_weight_bytes(strategy: Strategy, workload: Workload, target: DseTarget) -> int:
    """Bytes of the pre-transformed weights."""
    return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in packed_weights(strategy, workload, target))


def strategy_compute(strategy: Strategy, data: te.Tensor, weight: Sequence[te.Tensor], workload: Workload,
                     target: DseTarget, quant: ActivationQuant | None = None) -> te.Tensor:
    """``strategy.compute`` on pre-transformed weights (as :func:`transformed_weights` lists them), with the
    input's quantization ``quant`` (used where the strategy :attr:`~Strategy.takes_input_quant`)."""
    weights = weight[0] if len(weight) == 1 else tuple(weight)
    return strategy.compute(data, weights, workload, target, quant)


def kernel_prim_func(strategy: Strategy, workload: Workload, target: DseTarget,
                     epilogue: Epilogue = Epilogue(), quant: ActivationQuant | None = None) -> tvm.tirx.PrimFunc:
    """The unscheduled PrimFunc of ``strategy`` on ``workload``: (data, packed weights..., [bias], [residual], out)."""
    layouts = strategy.layouts(workload, target)
    data_shape = model_shapes(workload)[0]
    data_layout = Layout.parse(layouts.data)
    data = te.placeholder(data_layout.shape(data_shape), data_layout.dtype, name="data")
    weights = [te.placeholder(shape, dtype, name=f"packed_weight_{i}" if i else "packed_weight")
               for i, (shape, dtype) in enumerate(packed_weights(strategy, workload, target))]
    out = strategy_compute(strategy, data, weights, workload, target, quant)
    bias = te.placeholder((workload.out_channels,), "float32", name="bias") if epilogue.bias else None
    residual = te.placeholder(out.shape, "float32", name="residual") if epilogue.residual else None
    result = apply_epilogue(out, layouts.output, epilogue, bias, residual)
    inputs = [data, *weights] + [t for t in (bias, residual) if t is not None]
    return te.create_prim_func(inputs + [result])


def build_kernel(strategy: Strategy | str, workload: Workload, target: DseTarget,
                 epilogue: Epilogue = Epilogue(), decisions: Mapping[str, Any] | None = None,
                 sample_seed: int | None = None, quant: ActivationQuant | None = None) -> BuiltKernel:
    """Build ``strategy`` for ``workload`` with its default schedule, or with ``decisions`` where given.

    With ``sample_seed``, every decision is drawn at random instead, as MetaSchedule's search does
    (``decisions`` is then ignored); the drawn ones are in the result's ``decisions``. ``quant`` is the
    input's quantization for an int8 strategy (a placeholder one when None).

    Raises ValueError when the strategy does not apply (with its reason) or a decision does not fit.
    """
    strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
    applicability = strategy.applies(workload, target)
    if not applicability:
        raise ValueError(f"{strategy.name} does not apply to {workload.describe()}: {applicability.reason}")
    func = kernel_prim_func(strategy, workload, target, epilogue, quant)
    if sample_seed is None:
        sch = s_tir.Schedule(func)
        decider = Decider(sch, dict(decisions or {}))
    else:
        sch = s_tir.Schedule(func, seed=sample_seed)
        decider = Decider(sch, None)
    strategy.schedule(sch, workload, target, decider)
    if sample_seed is None:
        decider.check_all_used()
    kernel = tvm.compile(sch.mod, target=target.tvm_target)
    raw_weight = te.placeholder(model_shapes(workload)[1], "float32", name="weight")
    packed = transformed_weights(strategy, raw_weight, workload, target)
    # Weights are transformed at compile time, on the machine that compiles: always the host.
    weight_transform = tvm.compile(te.create_prim_func([raw_weight, *packed]), target=tvm.target.Target({"kind": "llvm"}))
    return BuiltKernel(strategy, workload, target, epilogue, decider.chosen, kernel, weight_transform,
                       tuple((tuple(int(d) for d in t.shape), str(t.dtype)) for t in packed),
                       (quant or UNCALIBRATED) if strategy.takes_input_quant else None)


@dataclass(frozen=True)
class KernelMeasurement:
    """The host latency of one (workload, strategy, decisions)."""

    strategy: str
    workload: Workload
    decisions: Decisions
    latency: Timing

    @property
    def gflops(self) -> float:
        return self.latency.gflops(self.workload.flops)


def measure_strategy(strategy: Strategy | str, workload: Workload, target: DseTarget,
                     decisions: Mapping[str, Any] | None = None, number: int = 10, repeat: int = 5,
                     min_repeat_ms: int = 0, seed: int = 0) -> KernelMeasurement:
    """Build and time one strategy on the host (warm-up, ``repeat`` measurements, median)."""
    built = build_kernel(strategy, workload, target, decisions=decisions)
    if not built.target.runs_on_host:
        raise ValueError(f"{built.target.key} does not run on this machine; measure it over RPC")
    rng = np.random.default_rng(seed)
    data_shape, weight_shape, _ = model_shapes(workload)
    arguments = built.arguments(rng.standard_normal(data_shape), rng.standard_normal(weight_shape))
    timing = built.time(arguments, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return KernelMeasurement(built.strategy.name, workload, built.decisions, timing)
