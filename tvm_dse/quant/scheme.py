"""The int8 quantization scheme tvm_dse's int8 strategies compute with, in one place: how activations
and weights are quantized (as TE stages for the kernels, and in numpy for the references and the
calibration), so the kernels and their references cannot drift apart.

Activations: per tensor, asymmetric, 8 bits: ``q = clip(floor(x / scale + 0.5) + zero_point, 0, 255)``
(stored as uint8, or as int8 shifted by -128 where the target's dot product is signed x signed).
Weights: per output channel, symmetric: ``q = clip(floor(w / scale_k + 0.5), -qmax, qmax)`` with
``scale_k = max |w_k| / qmax``; qmax is 127, or 63 where the dot product adds two u8 x s8 products in
int16 (AVX2's vpmaddubsw saturates above 32767; 2 x 255 x 64 fits). Accumulation is int32; the output
``(acc - zero_point * sum(q_k)) * scale * scale_k`` is dequantized in the kernel's output stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import te, tirx

U8_MAX = 255


@dataclass(frozen=True)
class ActivationQuant:
    """Per-tensor quantization of one activation: ``x ~ scale * (q - zero_point)`` with q in [0, 255]."""

    scale: float
    zero_point: int

    def __post_init__(self) -> None:
        if not (self.scale > 0 and np.isfinite(self.scale)):
            raise ValueError(f"an activation scale must be positive and finite, got {self.scale}")
        if not 0 <= self.zero_point <= U8_MAX:
            raise ValueError(f"an activation zero point must be in [0, {U8_MAX}], got {self.zero_point}")

    @classmethod
    def from_range(cls, low: float, high: float) -> "ActivationQuant":
        """The quantization covering [low, high] (widened to include 0, so zero padding is exact)."""
        low, high = min(float(low), 0.0), max(float(high), 0.0)
        scale = float(np.float32((high - low) / U8_MAX)) if high > low else 1.0
        zero_point = int(np.clip(np.floor(-low / scale + 0.5), 0, U8_MAX))
        return cls(scale, zero_point)

    @property
    def inverse_scale(self) -> np.float32:
        return np.float32(1.0) / np.float32(self.scale)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """uint8 codes of ``x`` (the numpy twin of :func:`quantize_activation`)."""
        scaled = np.asarray(x, np.float32) * self.inverse_scale
        return np.clip(np.floor(scaled + np.float32(0.5)) + self.zero_point, 0, U8_MAX).astype(np.uint8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, np.float32) - self.zero_point) * np.float32(self.scale)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ActivationQuant":
        return cls(float(data["scale"]), int(data["zero_point"]))


# What a kernel is built with when no calibration is at hand (measuring, tuning): the values do not
# change the kernel's speed.
UNCALIBRATED = ActivationQuant(1.0 / 32, 128)


def quantize_activation(x: tirx.PrimExpr, quant: ActivationQuant) -> tirx.PrimExpr:
    """TE expression: the uint8 code of fp32 ``x``."""
    scaled = x * tirx.const(float(quant.inverse_scale), "float32")
    code = te.floor(scaled + tirx.const(0.5, "float32")) + tirx.const(float(quant.zero_point), "float32")
    return te.min(te.max(code, tirx.const(0.0, "float32")), tirx.const(float(U8_MAX), "float32")).astype("uint8")


def dequantize_activation(code: tirx.PrimExpr, quant: ActivationQuant) -> tirx.PrimExpr:
    """TE expression: the fp32 value of a uint8 activation code."""
    return (code.astype("float32") - tirx.const(float(quant.zero_point), "float32")) * tirx.const(float(quant.scale),
                                                                                                  "float32")


def weight_scales(weight: te.Tensor, qmax: int) -> te.Tensor:
    """TE stage: per-output-channel scale ``max |w_k| / qmax`` of an OIHW weight (1 for an all-zero channel)."""
    k, c, r, s = (int(d) for d in weight.shape)
    ci, ry, rx = te.reduce_axis((0, c), "ci"), te.reduce_axis((0, r), "ry"), te.reduce_axis((0, s), "rx")
    largest = te.compute((k,), lambda o: te.max(te.abs(weight[o, ci, ry, rx]), axis=[ci, ry, rx]), name="weight_absmax")
    return te.compute((k,), lambda o: tirx.Select(largest[o] > 0, largest[o] / tirx.const(float(qmax), "float32"),
                                                  tirx.const(1.0, "float32")), name="weight_scale")


def quantize_weight(value: tirx.PrimExpr, scale: tirx.PrimExpr, qmax: int) -> tirx.PrimExpr:
    """TE expression: the int8 code of one weight value under its channel's ``scale``."""
    code = te.floor(value / scale + tirx.const(0.5, "float32"))
    return te.min(te.max(code, tirx.const(-qmax, "float32")), tirx.const(qmax, "float32")).astype("int8")


def quantize_weights_reference(weight: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of :func:`weight_scales` and :func:`quantize_weight`: (int8 codes OIHW, scales per channel)."""
    weight = np.asarray(weight, np.float32)
    largest = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    scales = np.where(largest > 0, largest / np.float32(qmax), np.float32(1.0)).astype(np.float32)
    codes = np.floor(weight / scales[:, None, None, None] + np.float32(0.5))
    return np.clip(codes, -qmax, qmax).astype(np.int8), scales
