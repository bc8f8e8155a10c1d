"""Activation layouts: names, channel indexing, and conversions to and from the model's NCHW.

A layout is a string: ``"NCHW"``, ``"NHWC"`` or ``"NCHW<x>c"`` (channels split into blocks of ``x``
that sit innermost, e.g. ``"NCHW8c"`` = shape (N, C/8, H, W, 8)). Dense layers use ``"NC"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from tvm import te

_BLOCKED = re.compile(r"^NCHW(\d+)c$")
PLAIN_LAYOUTS = ("NCHW", "NHWC", "NC")


@dataclass(frozen=True)
class Layout:
    """A parsed activation layout."""

    name: str
    block: int = 0  # channels per block for NCHW<x>c, 0 otherwise

    @classmethod
    def parse(cls, name: str) -> "Layout":
        if name in PLAIN_LAYOUTS:
            return cls(name)
        match = _BLOCKED.match(name)
        if match and int(match.group(1)) > 0:
            return cls(name, int(match.group(1)))
        raise ValueError(f"unknown layout {name!r}; accepted: NCHW, NHWC, NC, NCHW<x>c (e.g. NCHW8c)")

    @classmethod
    def blocked(cls, block: int) -> "Layout":
        return cls(f"NCHW{block}c", block)

    def shape(self, nchw: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of a tensor of logical NCHW shape ``nchw`` in this layout."""
        if self.name in ("NCHW", "NC"):
            return tuple(nchw)
        n, c, h, w = nchw
        if self.name == "NHWC":
            return (n, h, w, c)
        if c % self.block:
            raise ValueError(f"{c} channels do not split into blocks of {self.block} ({self.name})")
        return (n, c // self.block, h, w, self.block)

    def channel(self, indices: tuple) -> object:
        """The logical channel of the element at ``indices`` (TE expressions or ints)."""
        if self.name in ("NCHW", "NC"):
            return indices[1]
        if self.name == "NHWC":
            return indices[3]
        return indices[1] * self.block + indices[4]

    def from_nchw(self, array: np.ndarray) -> np.ndarray:
        """Convert a NCHW numpy array into this layout."""
        if self.name in ("NCHW", "NC"):
            return np.ascontiguousarray(array)
        if self.name == "NHWC":
            return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
        n, c, h, w = array.shape
        return np.ascontiguousarray(array.reshape(n, c // self.block, self.block, h, w).transpose(0, 1, 3, 4, 2))

    def to_nchw(self, array: np.ndarray) -> np.ndarray:
        """Convert an array in this layout back to NCHW."""
        if self.name in ("NCHW", "NC"):
            return np.ascontiguousarray(array)
        if self.name == "NHWC":
            return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
        n, cb, h, w, block = array.shape
        return np.ascontiguousarray(array.transpose(0, 1, 4, 2, 3).reshape(n, cb * block, h, w))

    def __str__(self) -> str:
        return self.name


def transform(tensor: te.Tensor, source: str | Layout, destination: str | Layout, name: str = "layout_transform") -> te.Tensor:
    """A TE stage converting an activation from ``source`` to ``destination`` layout."""
    source = Layout.parse(source) if isinstance(source, str) else source
    destination = Layout.parse(destination) if isinstance(destination, str) else destination
    if source == destination:
        return tensor
    shape = tuple(int(d) for d in tensor.shape)
    if source.name == "NHWC":
        n, h, w, c = shape
    elif source.block:
        n, cb, h, w, block = shape
        c = cb * block
    else:
        n, c, h, w = shape

    def read(bn, bc, bh, bw):
        if source.name == "NHWC":
            return tensor[bn, bh, bw, bc]
        if source.block:
            return tensor[bn, bc // source.block, bh, bw, bc % source.block]
        return tensor[bn, bc, bh, bw]

    out_shape = destination.shape((n, c, h, w))
    if destination.name == "NHWC":
        return te.compute(out_shape, lambda bn, bh, bw, bc: read(bn, bc, bh, bw), name=name)
    if destination.block:
        return te.compute(out_shape, lambda bn, bcb, bh, bw, bv: read(bn, bcb * destination.block + bv, bh, bw),
                          name=name)
    return te.compute(out_shape, lambda bn, bc, bh, bw: read(bn, bc, bh, bw), name=name)
