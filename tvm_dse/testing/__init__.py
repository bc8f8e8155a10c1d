"""Testing helpers for tvm_dse and for projects built on it: the model zoo, the onnxruntime reference
and the error measure every numerical check uses."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from .zoo import MODEL_NAMES, REFERENCE_GFLOP, build_model, conv_flops

__all__ = ["MODEL_NAMES", "REFERENCE_GFLOP", "build_model", "conv_flops", "onnxruntime_outputs", "relative_error"]


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


def onnxruntime_outputs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], threads: int | None = None) -> list[np.ndarray]:
    """Run ``model`` in onnxruntime on the CPU (all graph optimizations) and return its outputs."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feed))
