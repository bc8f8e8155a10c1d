"""Validation: an optimized module is checked against TVM's default build of the same model (and a built
ONNX model against onnxruntime), by the error measure every numerical check of tvm_dse uses; onnxruntime is
also the reference latency a plan is reported against."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from .errors import TvmDseError
from .timing import Sampler, callable_sampler

# fp32 outputs of two correct implementations differ by rounding only
VALIDATION_BOUND = 1e-4
# int8 nodes change outputs by their quantization error (ResNet-18 all-int8: ~0.02); a broken kernel by far more
QUANTIZED_VALIDATION_BOUND = 0.05
# onnxruntime's idle worker threads spin for a while after a run: a pause that lets them stop before the
# other runtime's round (and the other's before onnxruntime's)
ONNXRUNTIME_SETTLE_S = 0.5


class ValidationError(TvmDseError):
    """The optimized module's outputs differ from TVM's default build of the same model."""


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference relative to the largest magnitude of ``expected``.

    Scale-free, and not blown up by individual outputs near zero the way an element-wise ratio is.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {actual.shape} vs {expected.shape}")
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    difference = np.max(np.abs(actual - expected)) if expected.size else 0.0
    return float(difference / scale) if scale > 0 else float(difference)


def onnxruntime_session(model: onnx.ModelProto, threads: int | None = None):
    """An onnxruntime CPU session for ``model`` with all graph optimizations and ``threads`` intra-op threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnxruntime_outputs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], threads: int | None = None) -> list[np.ndarray]:
    """Run ``model`` in onnxruntime on the CPU (all graph optimizations) and return its outputs."""
    return onnxruntime_session(model, threads).run(None, dict(feed))


def onnxruntime_sampler(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], threads: int) -> Sampler:
    """A sampler running ``model`` on ``feed`` in onnxruntime with ``threads`` intra-op threads, for a
    steady-state timing as tvm_dse's modules get. Its worker threads spin after each run and would slow
    whatever runs next on the same cores: time it in rounds of its own, each after a pause of
    :data:`ONNXRUNTIME_SETTLE_S` for the other runtime's, never call by call between another runtime's runs."""
    session = onnxruntime_session(model, threads)
    feed = dict(feed)
    return callable_sampler(lambda: session.run(None, feed))
