"""Activation layouts: names, channel and spatial axes, element types, and conversions to and from the model's NCHW.

A layout is a string: ``"NCHW"``, ``"NHWC"`` or ``"NCHW<x>c"`` (channels split into blocks of ``x``
that sit innermost, e.g. ``"NCHW8c"`` = shape (N, C/8, H, W, 8)). Dense layers use ``"NC"``. The suffix
``"_u8"`` (``"NCHW8c_u8"``) marks 8-bit activation codes (:mod:`tvm_dse.quant.scheme`) in that arrangement:
what int8 strategies read, so converting precision is an activation conversion like changing layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tvm import te

from .quant.scheme import ActivationQuant, dequantize_activation, quantize_activation

_BLOCKED = re.compile(r"^NCHW(\d+)c$")
PLAIN_LAYOUTS = ("NCHW", "NHWC", "NC")
CODES_SUFFIX = "_u8"
# The model's own layout of an activation, by its rank: where model inputs, model outputs and every
# operator that depends on the layout (reshape, softmax, ...) read and write.
NATIVE_LAYOUTS = {4: "NCHW", 2: "NC"}


def native_layout(shape: Sequence[int] | None) -> str:
    """The model's own layout for an activation of logical ``shape`` ("" for ranks without one)."""
    return NATIVE_LAYOUTS.get(len(shape or ()), "")


def holds(layout: str, *shapes: Sequence[int]) -> bool:
    """Whether activations of every logical shape in ``shapes`` can be held in ``layout``: a 4-D one in a
    4-D layout whose channel blocks divide its channels, any other only in its native layout.

    A join (residual add, concatenation) meets in one layout, so that layout must hold each operand and
    the result: ``NCHW16c`` holds a 32-channel concatenation but not its 8-channel operand."""
    for shape in shapes:
        if len(shape) != 4:
            if layout != native_layout(shape):
                return False
            continue
        try:
            parsed = Layout.parse(layout)
            parsed.shape(tuple(shape))
        except ValueError:
            return False
        if parsed.arrangement == "NC":
            return False
    return True


def codes_layout(layout: str) -> str:
    """The 8-bit-code twin of an fp32 activation layout (``"NCHW8c"`` -> ``"NCHW8c_u8"``)."""
    return layout + CODES_SUFFIX


def changes_precision_only(source: str | Layout, destination: str | Layout) -> bool:
    """Whether converting ``source`` to ``destination`` keeps the arrangement and only (de)quantizes: an
    elementwise stage, which fusion folds into the kernel producing its input (that kernel writes codes)."""
    source, destination = (Layout.parse(x) if isinstance(x, str) else x for x in (source, destination))
    return source.arrangement == destination.arrangement and source.dtype != destination.dtype


@dataclass(frozen=True)
class Layout:
    """A parsed activation layout."""

    name: str
    block: int = 0  # channels per block for NCHW<x>c, 0 otherwise
    dtype: str = "float32"  # "uint8" for activation codes

    @classmethod
    def parse(cls, name: str) -> "Layout":
        arrangement = name.removesuffix(CODES_SUFFIX)
        dtype = "float32" if arrangement == name else "uint8"
        if arrangement in PLAIN_LAYOUTS:
            return cls(name, 0, dtype)
        match = _BLOCKED.match(arrangement)
        if match and int(match.group(1)) > 0:
            return cls(name, int(match.group(1)), dtype)
        raise ValueError(f"unknown layout {name!r}; accepted: NCHW, NHWC, NC, NCHW<x>c (e.g. NCHW8c), each with "
                         f"{CODES_SUFFIX} for 8-bit activation codes")

    @property
    def arrangement(self) -> str:
        """The name without the element type: how the axes are laid out."""
        return self.name.removesuffix(CODES_SUFFIX)

    @classmethod
    def blocked(cls, block: int) -> "Layout":
        return cls(f"NCHW{block}c", block)

    def shape(self, nchw: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of a tensor of logical NCHW shape ``nchw`` in this layout."""
        if self.arrangement in ("NCHW", "NC"):
            return tuple(nchw)
        n, c, h, w = nchw
        if self.arrangement == "NHWC":
            return (n, h, w, c)
        if c % self.block:
            raise ValueError(f"{c} channels do not split into blocks of {self.block} ({self.name})")
        return (n, c // self.block, h, w, self.block)

    @property
    def channel_axis(self) -> int:
        """The axis that indexes channels (NCHW<x>c: the channel blocks), along which activations concatenate."""
        return 3 if self.arrangement == "NHWC" else 1

    @property
    def spatial_axes(self) -> tuple[int, int]:
        """The (height, width) axes of a 4-D activation in this layout."""
        return (1, 2) if self.arrangement == "NHWC" else (2, 3)

    def channel(self, indices: tuple) -> object:
        """The logical channel of the element at ``indices`` (TE expressions or ints)."""
        if not self.block:
            return indices[self.channel_axis]
        return indices[1] * self.block + indices[4]

    def from_nchw(self, array: np.ndarray) -> np.ndarray:
        """Convert a NCHW numpy array into this layout."""
        if self.arrangement in ("NCHW", "NC"):
            return np.ascontiguousarray(array)
        if self.arrangement == "NHWC":
            return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
        n, c, h, w = array.shape
        return np.ascontiguousarray(array.reshape(n, c // self.block, self.block, h, w).transpose(0, 1, 3, 4, 2))

    def to_nchw(self, array: np.ndarray) -> np.ndarray:
        """Convert an array in this layout back to NCHW."""
        if self.arrangement in ("NCHW", "NC"):
            return np.ascontiguousarray(array)
        if self.arrangement == "NHWC":
            return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
        n, cb, h, w, block = array.shape
        return np.ascontiguousarray(array.transpose(0, 1, 4, 2, 3).reshape(n, cb * block, h, w))

    def __str__(self) -> str:
        return self.name


def transform(tensor: te.Tensor, source: str | Layout, destination: str | Layout, name: str = "layout_transform",
              quant: ActivationQuant | None = None) -> te.Tensor:
    """A TE stage converting an activation from ``source`` to ``destination`` layout; between fp32 and
    8-bit codes it quantizes or dequantizes on the way, with ``quant``."""
    source = Layout.parse(source) if isinstance(source, str) else source
    destination = Layout.parse(destination) if isinstance(destination, str) else destination
    if source == destination:
        return tensor
    if source.dtype != destination.dtype and quant is None:
        raise ValueError(f"converting {source.name} to {destination.name} needs the activation's quantization")
    if changes_precision_only(source, destination):
        # Index for index, so that fusion sees an elementwise stage.
        convert = quantize_activation if destination.dtype == "uint8" else dequantize_activation
        return te.compute(tensor.shape, lambda *i: convert(tensor(*i), quant), name=name)
    shape = tuple(int(d) for d in tensor.shape)
    if source.arrangement == "NHWC":
        n, h, w, c = shape
    elif source.block:
        n, cb, h, w, block = shape
        c = cb * block
    else:
        n, c, h, w = shape

    def element(bn, bc, bh, bw):
        if source.arrangement == "NHWC":
            value = tensor[bn, bh, bw, bc]
        elif source.block:
            value = tensor[bn, bc // source.block, bh, bw, bc % source.block]
        else:
            value = tensor[bn, bc, bh, bw]
        if source.dtype == destination.dtype:
            return value
        if destination.dtype == "uint8":
            return quantize_activation(value, quant)
        return dequantize_activation(value, quant)

    out_shape = destination.shape((n, c, h, w))
    if destination.arrangement == "NHWC":
        return te.compute(out_shape, lambda bn, bh, bw, bc: element(bn, bc, bh, bw), name=name)
    if destination.block:
        return te.compute(out_shape, lambda bn, bcb, bh, bw, bv: element(bn, bcb * destination.block + bv, bh, bw),
                          name=name)
    return te.compute(out_shape, lambda bn, bc, bh, bw: element(bn, bc, bh, bw), name=name)
