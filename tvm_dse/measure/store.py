"""The measurement store: every result (or failure) as one JSON line, appended as it arrives.

Lines are keyed by target, workload, strategy and its schedule version, decisions, thread pool and TVM
version: a strategy whose schedule changed (a new ``schedule_version``) is measured again, never priced by
records of the kernel it used to build, and a kernel timed on one thread pool (the runner's
:attr:`~tvm_dse.measure.Runner.thread_pool`; records older than the field have "") is timed again on
another. Writers take an exclusive ``flock`` around each append and readers a shared one, so two runs
writing the same store interleave whole lines. Every record is checked on its way in (see
:meth:`Record.problem`): a truncated, corrupt or invalid line (a killed writer, a hand edit, an imported
file) is skipped with a warning that names the file and line, and an invalid record is never written. A key
is priced by its fastest quiet successful record, a disturbed one (timed while other work was busy, see
:class:`~tvm_dse.timing.Timing`) only while it has none; its failures count only while it has no success
(see :func:`improves`).

A store may be scoped to one target and TVM version (the tuning logs keep one such store per pair):
records of another target or version are then refused on append and skipped with a warning on read, so
kernels measured elsewhere are never priced or applied here.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import tvm

from .candidate import CONVERSION_PREFIX, measurement_key

STATUSES = ("ok", "build_error", "run_error", "timeout")
# A target key or TVM version names a folder or file of the tuning logs: one plain path component
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,+-]*")


def plain_name_problem(what: str, name: object) -> str:
    """Why ``name`` cannot be a ``what`` (a target key, a TVM version) in the tuning logs ("" when it can)."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        return (f"{what} {name!r} is not a plain name (letters, digits and _ . , + -, starting with a letter or "
                "digit)")
    return ""


@dataclass
class Record:
    """One measurement (or failure) of a candidate on a target."""

    target: str
    workload: dict[str, Any]
    workload_key: str
    strategy: str
    decisions: dict[str, Any]
    status: str
    latency: dict[str, Any] | None = None  # a Timing as a dict, when status is "ok"
    error: str = ""
    board: str = ""  # "local" or the board's host:port
    thread_pool: str = ""  # the pool the kernel ran on (Runner.thread_pool); "": none shaped its time, or not recorded
    schedule_version: int = 1
    tvm_version: str = field(default_factory=lambda: tvm.__version__)
    measured_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str:
        """Why this record cannot be kept ("" when it can): the schema's types, a known status, a finite
        positive median latency exactly when the status is ok, and a target key and TVM version that are
        plain names (they become the log's folder and file names)."""
        if self.status not in STATUSES:
            return f"unknown status {self.status!r}; accepted: {', '.join(STATUSES)}"
        for name, kind in (("workload", dict), ("decisions", dict), ("workload_key", str), ("strategy", str),
                           ("error", str), ("board", str), ("thread_pool", str),
                           ("measured_at", str)):
            if not isinstance(getattr(self, name), kind):
                return f"{name} must be a {'mapping' if kind is dict else 'string'}, not {getattr(self, name)!r}"
        if not self.workload_key or not self.strategy:
            return "workload_key and strategy must not be empty"
        if not isinstance(self.schedule_version, int) or isinstance(self.schedule_version, bool):
            return f"schedule_version must be an integer, not {self.schedule_version!r}"
        problem = plain_name_problem("target", self.target) or plain_name_problem("TVM version", self.tvm_version)
        if problem:
            return problem
        if self.status != "ok":
            return "" if self.latency is None else f"a {self.status} record carries a latency"
        median_ms = self.latency.get("median_ms") if isinstance(self.latency, dict) else None
        if isinstance(median_ms, bool) or not isinstance(median_ms, (int, float)) or not math.isfinite(median_ms) \
                or median_ms <= 0:
            return f"an ok record needs a finite positive latency median_ms, not {median_ms!r}"
        return ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def disturbed(self) -> bool:
        """A success timed while the machine was busy or its samples spread (see :class:`~tvm_dse.timing.Timing`)."""
        return self.ok and bool(self.latency.get("disturbed"))

    @property
    def trusted(self) -> bool:
        """A success timed on a quiet machine: the price of its kernel."""
        return self.ok and not self.disturbed

    @property
    def median_ms(self) -> float | None:
        return self.latency["median_ms"] if self.latency else None

    @property
    def is_conversion(self) -> bool:
        """A layout conversion's measurement, not a kernel's."""
        return self.strategy.startswith(CONVERSION_PREFIX)

    def schedule_is_current(self, schedule_versions: Mapping[str, int]) -> bool:
        """Whether a strategy of the record's schedule version builds this kernel today, given the schedule
        version of every strategy that does (a record of an older schedule version prices a kernel that no
        longer exists)."""
        return schedule_versions.get(self.strategy) == self.schedule_version

    def measured_as(self, target_key: str, schedule_versions: Mapping[str, int], thread_pool: str) -> bool:
        """Whether the record's kernel is the one a run measuring on ``target_key`` with ``thread_pool``
        under the running TVM builds today (see :meth:`schedule_is_current`)."""
        return (self.target == target_key and self.thread_pool == thread_pool and self.tvm_version == tvm.__version__
                and self.schedule_is_current(schedule_versions))

    @property
    def key(self) -> str:
        return measurement_key(self.target, self.workload_key, self.strategy, self.schedule_version,
                               self.decisions, self.thread_pool, self.tvm_version)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "Record":
        return cls(**json.loads(line))


class MeasurementStore:
    """A JSON-lines file of :class:`Record` s, safe for concurrent appends.

    With ``target_key`` (and ``tvm_version``, default the running TVM's when a target is given), the store
    holds that target's records only.
    """

    def __init__(self, path: str | Path, target_key: str | None = None, tvm_version: str | None = None):
        self.path = Path(path)
        self.target_key = target_key
        self.tvm_version = tvm_version or (tvm.__version__ if target_key else None)

    def foreign(self, record: Record) -> str:
        """Why ``record`` does not belong in this store ("" when it does)."""
        if self.target_key and record.target != self.target_key:
            return f"a record for target {record.target}, not {self.target_key}"
        if self.tvm_version and record.tvm_version != self.tvm_version:
            return f"a record of TVM {record.tvm_version}, not {self.tvm_version}"
        return ""

    def append(self, record: Record) -> None:
        """Write one record durably before returning (a crash after this loses nothing).

        Raises ValueError for a record of another target or TVM version than the store's.
        """
        reason = self.foreign(record)
        if reason:
            raise ValueError(f"{self.path} refuses {reason}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = record.to_json() + "\n"
        with open(self.path, "a", encoding="utf-8") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            try:
                stream.write(line)
                stream.flush()
                os.fsync(stream.fileno())
            finally:
                fcntl.flock(stream, fcntl.LOCK_UN)

    @contextmanager
    def measuring(self, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the store's measuring lock (a file beside it) for the block: runs measuring into one store
        take turns, so none times kernels under another's compiling and timing, and the one that waited
        finds what the other measured in the store. ``waiting`` is called first if another run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a", encoding="utf-8") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def records(self) -> list[Record]:
        """Every readable record of this store in file order; unreadable and foreign lines are skipped with
        a warning naming the file and line."""
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8", errors="replace") as stream:
            fcntl.flock(stream, fcntl.LOCK_SH)
            try:
                lines = stream.readlines()
            finally:
                fcntl.flock(stream, fcntl.LOCK_UN)
        return self._parse(lines)

    def _parse(self, lines: list[str]) -> list[Record]:
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = Record.from_json(line)
            except (ValueError, TypeError) as error:
                warnings.warn(f"{self.path}:{number}: skipping an unreadable measurement record ({error})",
                              stacklevel=3)
                continue
            reason = self.foreign(record)
            if reason:
                warnings.warn(f"{self.path}:{number}: skipping {reason}", stacklevel=3)
                continue
            records.append(record)
        return records

    def rewrite(self, keep: Callable[[list[Record]], list[Record]]) -> tuple[int, int]:
        """Replace the store's records by ``keep(records)``, in place under the exclusive lock (writers
        waiting on the lock append after the rewrite); returns (records before, records after)."""
        if not self.path.is_file():
            return 0, 0
        with open(self.path, "r+", encoding="utf-8", errors="replace") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            try:
                before = self._parse(stream.readlines())
                after = keep(before)
                stream.seek(0)
                stream.writelines(record.to_json() + "\n" for record in after)
                stream.truncate()
                stream.flush()
                os.fsync(stream.fileno())
            finally:
                fcntl.flock(stream, fcntl.LOCK_UN)
        return len(before), len(after)

    def held(self) -> dict[str, Record]:
        """What the store holds for every key: its best success (see :func:`improves`), else its latest
        failure."""
        return held_records(self.records())

    def unsettled(self) -> dict[str, int]:
        """How many failed or disturbed records every key without a quiet success has."""
        return unsettled_counts(self.records())

    def extend(self, records: Iterable[Record]) -> None:
        for record in records:
            self.append(record)

    def best(self, target_key: str, schedule_versions: Mapping[str, int],
             thread_pool: str) -> dict[tuple[str, str], Record]:
        """:func:`best_records` of the store's records."""
        return best_records(self.records(), target_key, schedule_versions, thread_pool)


def held_records(records: Iterable[Record]) -> dict[str, Record]:
    """Per key, the best success (see :func:`improves`), else the latest failure: a failure (a board lost,
    a disk full) never hides a success, and a slower or disturbed timing of a kernel never replaces a
    faster quiet one."""
    held: dict[str, Record] = {}
    for record in records:
        current = held.get(record.key)
        if current is None or improves(record, current) or not (record.ok or current.ok):
            held[record.key] = record
    return held


def unsettled_counts(records: Iterable[Record]) -> dict[str, int]:
    """How many failed or disturbed records every key without a quiet success has: the attempts to measure
    it that gave nothing to trust."""
    counts: dict[str, int] = {}
    settled = set()
    for record in records:
        if record.trusted:
            settled.add(record.key)
        else:
            counts[record.key] = counts.get(record.key, 0) + 1
    return {key: count for key, count in counts.items() if key not in settled}


def improves(record: Record, current: Record) -> bool:
    """Whether ``record`` prices its key better than ``current`` (same key): a success over a failure, a
    quiet success over a disturbed one (a timing under load is no price, however it came out), a faster
    success over a slower one of the same kind."""
    if not (record.ok and current.ok):
        return record.ok
    if record.disturbed != current.disturbed:
        return current.disturbed
    return record.median_ms < current.median_ms


def best_records(records: Iterable[Record], target_key: str, schedule_versions: Mapping[str, int],
                 thread_pool: str) -> dict[tuple[str, str], Record]:
    """The best successful record (see :func:`improves`) of every (workload key, strategy) on
    ``target_key``, measured with the strategy's current schedule version (``schedule_versions``: strategy
    name -> version) on ``thread_pool`` under the running TVM: default and tuned decisions alike (layout
    conversions and unknown strategies left out)."""
    best: dict[tuple[str, str], Record] = {}
    for record in records:
        if not (record.ok and record.measured_as(target_key, schedule_versions, thread_pool)):
            continue
        pair = (record.workload_key, record.strategy)
        if pair not in best or improves(record, best[pair]):
            best[pair] = record
    return best
