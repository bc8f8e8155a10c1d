"""Workloads: the shape of one tunable operator (a 2-D convolution or a dense layer), as plain data.

A workload is what strategies, measurements and tuning logs are keyed by: two nodes with equal
workloads cost the same with the same implementation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

OPS = ("conv2d", "dense")


@dataclass(frozen=True)
class Workload:
    """One conv2d (NCHW semantics) or dense layer.

    A dense layer is described as the 1x1 convolution it equals on a 1x1 image: ``in_channels`` input
    features, ``out_channels`` output features, ``batch`` rows. Padding is (top, left, bottom, right).
    """

    op: str
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown workload op {self.op!r}; accepted: {', '.join(OPS)}")
        for name in ("kernel", "stride", "padding", "dilation"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels={self.in_channels} "
                             f"and out_channels={self.out_channels}")

    @classmethod
    def dense(cls, batch: int, in_features: int, out_features: int, dtype: str = "float32") -> "Workload":
        return cls("dense", batch, in_features, 1, 1, out_features, dtype=dtype)

    @property
    def out_height(self) -> int:
        dilated = (self.kernel[0] - 1) * self.dilation[0] + 1
        return (self.height + self.padding[0] + self.padding[2] - dilated) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        dilated = (self.kernel[1] - 1) * self.dilation[1] + 1
        return (self.width + self.padding[1] + self.padding[3] - dilated) // self.stride[1] + 1

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels

    @property
    def macs(self) -> int:
        """Multiply-adds of the direct algorithm."""
        per_output = (self.in_channels // self.groups) * self.kernel[0] * self.kernel[1]
        return self.batch * self.out_channels * self.out_height * self.out_width * per_output

    @property
    def flops(self) -> int:
        """2 x multiply-adds of the direct algorithm, whatever algorithm runs (so GFLOP/s compare)."""
        return 2 * self.macs

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.out_height, self.out_width)

    def key(self) -> str:
        """A compact, stable string naming this workload, e.g. ``conv2d_1x64x56x56_k64_3x3_s1x1_p1,1,1,1_d1x1_g1_float32``."""
        n, c, h, w = self.input_shape
        return (f"{self.op}_{n}x{c}x{h}x{w}_k{self.out_channels}_{self.kernel[0]}x{self.kernel[1]}"
                f"_s{self.stride[0]}x{self.stride[1]}_p{','.join(map(str, self.padding))}"
                f"_d{self.dilation[0]}x{self.dilation[1]}_g{self.groups}_{self.dtype}")

    def describe(self) -> str:
        """A short human-readable form, e.g. ``3x3 s1 64->64 @56x56``."""
        if self.op == "dense":
            return f"dense {self.in_channels}->{self.out_channels} x{self.batch}"
        group = ""
        if self.is_depthwise:
            group = " dw"
        elif self.groups > 1:
            group = f" g{self.groups}"
        return (f"{self.kernel[0]}x{self.kernel[1]} s{self.stride[0]}{group} {self.in_channels}->{self.out_channels}"
                f" @{self.height}x{self.width}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("kernel", "stride", "padding", "dilation"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Workload":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown workload fields {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**data)
