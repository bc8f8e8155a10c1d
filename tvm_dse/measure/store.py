"""The measurement store: every result (or failure) as one JSON line, appended as it arrives.

Lines are keyed by target, workload, strategy and its schedule version, decisions and TVM version: a
strategy whose schedule changed (a new ``schedule_version``) is measured again, never priced by records
of the kernel it used to build. Writers take an exclusive
``flock`` around each append and readers a shared one, so two runs writing the same store interleave
whole lines; a truncated or corrupt line (a killed writer, a hand edit) is skipped with a warning that
names the file and line. The last record of a key wins.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import tvm

from .candidate import measurement_key

STATUSES = ("ok", "build_error", "run_error", "timeout")


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
    schedule_version: int = 1
    tvm_version: str = field(default_factory=lambda: tvm.__version__)
    measured_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; accepted: {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def median_ms(self) -> float | None:
        return self.latency["median_ms"] if self.latency else None

    @property
    def key(self) -> str:
        return measurement_key(self.target, self.workload_key, self.strategy, self.schedule_version,
                               self.decisions, self.tvm_version)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "Record":
        return cls(**json.loads(line))


class MeasurementStore:
    """A JSON-lines file of :class:`Record` s, safe for concurrent appends."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: Record) -> None:
        """Write one record durably before returning (a crash after this loses nothing)."""
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

    def records(self) -> list[Record]:
        """Every readable record in file order; unreadable lines are skipped with a warning."""
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8", errors="replace") as stream:
            fcntl.flock(stream, fcntl.LOCK_SH)
            try:
                lines = stream.readlines()
            finally:
                fcntl.flock(stream, fcntl.LOCK_UN)
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(Record.from_json(line))
            except (ValueError, TypeError) as error:
                warnings.warn(f"{self.path}:{number}: skipping an unreadable measurement record ({error})",
                              stacklevel=2)
        return records

    def latest(self) -> dict[str, Record]:
        """The last record of every key."""
        return {record.key: record for record in self.records()}

    def extend(self, records: Iterable[Record]) -> None:
        for record in records:
            self.append(record)
