"""What the measurement package measures: any candidate that follows :class:`MeasurableCandidate`, and
the key naming its measurement in a store.

The candidates themselves live with what they build (a strategy's kernel in
:mod:`tvm_dse.strategies.candidate`, a layout conversion in :mod:`tvm_dse.conversions`); each kind
registers the function that builds it with :func:`tvm_dse.measure.register_build_function`.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Protocol

import tvm

from ..target import DseTarget

# what a layout conversion's "strategy" name starts with in a measurement record
CONVERSION_PREFIX = "convert_"


class MeasurableCandidate(Protocol):
    """One thing to build and time on a target, and what its record says about it.

    ``kind`` names the registered build function that builds it from ``spec()``; ``strategy``,
    ``workload_key``, ``workload_dict()``, ``schedule_version`` and ``decisions`` are written into its
    record; ``key(target, thread_pool)`` is what that record is stored under.
    """

    kind: str

    @property
    def strategy(self) -> str: ...

    @property
    def workload_key(self) -> str: ...

    @property
    def schedule_version(self) -> int: ...

    @property
    def decisions(self) -> Mapping[str, Any] | None: ...

    def workload_dict(self) -> dict[str, Any]:
        """The workload as plain data, for the record."""

    def describe(self) -> str:
        """A short human-readable name, for progress and error messages."""

    def spec(self) -> dict[str, Any]:
        """Plain data from which the kind's build function builds it in a builder worker."""

    def key(self, target: DseTarget, thread_pool: str) -> str:
        """What a measurement of it on ``target`` with ``thread_pool`` (:attr:`~tvm_dse.measure.Runner.thread_pool`)
        is stored under (decisions resolved)."""

    def resolved(self, target: DseTarget) -> "MeasurableCandidate":
        """The same candidate with concrete decisions for ``target`` (itself when they are)."""


def measurement_key(target_key: str, workload_key: str, strategy: str, schedule_version: int,
                    decisions: Mapping[str, Any], thread_pool: str, tvm_version: str | None = None) -> str:
    """The store key of a measurement: target, workload, strategy and its schedule version, decisions, the
    thread pool the kernel ran on (see :func:`tvm_dse.thread_pool.pool_key`; "" where none shapes its cost)
    and TVM version (the running one by default)."""
    decisions_text = json.dumps(decisions, sort_keys=True, separators=(",", ":"))
    return "|".join([target_key, workload_key, f"{strategy}@{schedule_version}", decisions_text, thread_pool,
                     tvm_version or tvm.__version__])
