"""Tuning logs: a directory holding one measurement store per target and TVM version.

``ROOT/<target key>/tvm-<version>.jsonl`` holds every measurement of kernels and layout conversions on
that target (default and tuned schedule decisions alike, failures included), so a later run, in this
project or another, measures or tunes only what is missing. Each store takes only its own target's and
TVM version's records (see :class:`~tvm_dse.measure.MeasurementStore`); merging and importing route every
record to its own store and never fold one target's records into another's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import tvm

from ..errors import TvmDseError
from ..measure import MeasurementStore, Record
from ..measure.store import held_records, improves, plain_name_problem
from ..strategies import schedule_versions
from ..target import DseTarget

STORE_PREFIX = "tvm-"
STORE_SUFFIX = ".jsonl"
# The logs shipped in the repository, for the machines the reference numbers were measured on; absent from
# an installation without the source tree.
SHIPPED_LOGS_DIR = Path(__file__).resolve().parents[2] / "tuning_logs"


def shipped_logs() -> dict[str, list[str]]:
    """Per target key the logs shipped with tvm_dse hold records of for the running TVM version, the thread
    pools they were timed on (see :attr:`tvm_dse.measure.Runner.thread_pool`)."""
    if not SHIPPED_LOGS_DIR.is_dir():
        return {}
    return {store.target_key: sorted({record.thread_pool for record in store.records()})
            for store in TuningLogs(SHIPPED_LOGS_DIR).stores() if store.tvm_version == tvm.__version__}


def shipped_target_keys(thread_pool: str) -> list[str]:
    """The target keys the logs shipped with tvm_dse hold records of for the running TVM version and
    ``thread_pool``: those a run measuring on that pool starts warm on."""
    return sorted(key for key, pools in shipped_logs().items() if thread_pool in pools)


def default_logs_dir() -> Path:
    """``$TVM_DSE_LOGS``, else ``~/.cache/tvm_dse/tuning_logs``: shared by every run on this machine."""
    return Path(os.environ.get("TVM_DSE_LOGS", Path.home() / ".cache" / "tvm_dse" / "tuning_logs"))


@dataclass(frozen=True)
class StoreSummary:
    """One store of a tuning-log directory, counted."""

    target: str
    tvm_version: str
    path: Path
    records: int
    kernels: int  # distinct (workload, strategy) pairs with a successful record
    failed: int


class TuningLogs:
    """The tuning logs under ``root`` (created on first write)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_logs_dir()

    def __repr__(self) -> str:
        return f"TuningLogs({str(self.root)!r})"

    def store(self, target: DseTarget | str, tvm_version: str | None = None) -> MeasurementStore:
        """The store of ``target`` (a :class:`DseTarget` or its key) and TVM version (default: running TVM's)."""
        key = target if isinstance(target, str) else target.key
        version = tvm_version or tvm.__version__
        problem = plain_name_problem("target key", key) or plain_name_problem("TVM version", version)
        if problem:
            raise TvmDseError(f"{problem}: it names the log's folder or file under {self.root}")
        return MeasurementStore(self.root / key / f"{STORE_PREFIX}{version}{STORE_SUFFIX}", key, version)

    def stores(self) -> list[MeasurementStore]:
        """Every store in the directory, sorted by target key and TVM version."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob(f"*/{STORE_PREFIX}*{STORE_SUFFIX}")):
            version = path.name[len(STORE_PREFIX):-len(STORE_SUFFIX)]
            found.append(MeasurementStore(path, path.parent.name, version))
        return found

    def summary(self) -> list[StoreSummary]:
        """Counts per store (``tvm-dse logs list``)."""
        summaries = []
        for store in self.stores():
            records = store.records()
            kernels = {(r.workload_key, r.strategy) for r in records if r.ok and not r.is_conversion}
            summaries.append(StoreSummary(store.target_key or "", store.tvm_version or "", store.path,
                                          len(records), len(kernels), sum(not r.ok for r in records)))
        return summaries

    def add(self, records: Iterable[Record], target: str | None = None) -> dict[tuple[str, str], int]:
        """Add ``records`` to the stores of their own targets and TVM versions, skipping those that would
        change nothing: per key, only a success that prices it better than the one held (see
        :func:`~tvm_dse.measure.store.improves`: faster, or quiet where the one held was disturbed), or a first
        success, is added (failures only where the key has no record at all).

        With ``target``, every record must be for that target key: otherwise TvmDseError, and nothing is
        added. Returns the number of records added per (target key, TVM version).
        """
        records = list(records)
        if target is not None:
            foreign = sorted({r.target for r in records if r.target != target})
            if foreign:
                raise TvmDseError(f"records for {', '.join(foreign)} are not for target {target}; add them "
                                  "without a target to keep each in its own target's log")
        by_store: dict[tuple[str, str], list[Record]] = {}
        for record in records:
            by_store.setdefault((record.target, record.tvm_version), []).append(record)
        added = {}
        for (key, version), incoming in by_store.items():
            store = self.store(key, version)
            held = store.held()
            fresh: dict[str, Record] = {}
            for record in incoming:
                current = fresh.get(record.key) or held.get(record.key)
                if current is None or improves(record, current):
                    fresh[record.key] = record
            store.extend(fresh.values())
            added[(key, version)] = len(fresh)
        return added

    def add_shipped(self, target: DseTarget) -> int:
        """Add the shipped logs' records for ``target`` (none unless they were made on this kind of machine);
        returns how many were new here."""
        if not SHIPPED_LOGS_DIR.is_dir() or self.root.resolve() == SHIPPED_LOGS_DIR.resolve():
            return 0
        shipped = TuningLogs(SHIPPED_LOGS_DIR).store(target)
        if not shipped.path.is_file():
            return 0
        return sum(self.add(shipped.records(), target.key).values())

    def merge(self, other: "TuningLogs | str | Path") -> dict[tuple[str, str], int]:
        """Add every store of another tuning-log directory (another project's or machine's) to this one."""
        other = other if isinstance(other, TuningLogs) else TuningLogs(other)
        if not other.root.is_dir():
            raise TvmDseError(f"{other.root} is not a tuning-log directory")
        added: dict[tuple[str, str], int] = {}
        for store in other.stores():
            added.update(self.add(store.records()))
        return added

    def import_file(self, path: str | Path, target: str | None = None) -> dict[tuple[str, str], int]:
        """Add the records of a JSON-lines file (an export, or any measurement store); see :meth:`add`."""
        path = Path(path)
        if not path.is_file():
            raise TvmDseError(f"no file {path} to import")
        return self.add(MeasurementStore(path).records(), target)

    def export(self, target: str, path: str | Path, tvm_version: str | None = None) -> int:
        """Write ``target``'s store (what it holds per key, see :meth:`MeasurementStore.held`) to ``path``;
        returns the records written."""
        store = self.store(target, tvm_version)
        if not store.path.is_file():
            known = ", ".join(sorted({s.target_key or "" for s in self.stores()})) or "none"
            raise TvmDseError(f"no tuning log for target {target} (TVM {store.tvm_version}) in {self.root}; "
                              f"targets held: {known}")
        records = list(store.held().values())
        destination = MeasurementStore(path)
        if destination.path.exists():
            raise TvmDseError(f"{destination.path} exists; export writes a new file")
        destination.extend(records)
        return len(records)

    def prune(self) -> dict[Path, tuple[int, int]]:
        """Keep the best successful record of every key (see :meth:`MeasurementStore.held`); drop failures
        (the next run measures those kernels again), records of schedule versions no strategy builds any
        more, and unreadable or invalid lines (each named in a warning); returns (records before, after) per
        store."""
        versions = schedule_versions()

        def keep(records: list[Record]) -> list[Record]:
            return [r for r in held_records(records).values()
                    if r.ok and (r.is_conversion or r.schedule_is_current(versions))]

        return {store.path: store.rewrite(keep) for store in self.stores()}
