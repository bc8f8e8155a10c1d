"""Timing results: the median and spread of repeated measurements, in milliseconds."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Statistics of repeated measurements of one thing, in milliseconds."""

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    repeats: int

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "Timing":
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no timing samples")
        return cls(float(np.median(ms)), float(ms.mean()), float(ms.std()), float(ms.min()), float(ms.max()),
                   int(ms.size))

    def gflops(self, flops: int) -> float:
        """Throughput for a computation of ``flops`` floating-point operations, at the median."""
        return flops / (self.median_ms * 1e-3) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.median_ms:.3f} ms (min {self.min_ms:.3f}, max {self.max_ms:.3f}, n={self.repeats})"
