"""Measuring candidates end to end: skip what the store already has, build the rest in parallel, time
them with a runner, and append every result or failure to the store as it arrives."""

from __future__ import annotations

import sys
import threading
from typing import Sequence

from ..progress import Progress
from ..target import DseTarget
from .builder import Builder, BuildResult
from .candidate import MeasurableCandidate
from .runner import RunResult, Runner
from .store import MeasurementStore, Record, failure_counts, held_records

# Failed measurements of one kernel after which later runs keep its failure instead of measuring it again
FAILED_ATTEMPTS = 3


def _record(target_key: str, build: BuildResult, run: RunResult | None) -> Record:
    candidate = build.candidate
    common = dict(target=target_key, workload=candidate.workload_dict(), workload_key=candidate.workload_key,
                  strategy=candidate.strategy, schedule_version=candidate.schedule_version,
                  decisions=dict(candidate.decisions))
    if run is None:
        return Record(**common, status="build_error", error=build.error)
    if run.status != "ok":
        return Record(**common, status=run.status, error=run.error, board=run.board)
    try:
        return Record(**common, status="ok", latency=run.timing.to_dict(), board=run.board)
    except ValueError as invalid:  # a timing no kernel can take (zero runs, a broken clock) is no measurement
        return Record(**common, status="run_error", error=f"{candidate.describe()}: {invalid}", board=run.board)


def measure_candidates(candidates: Sequence[MeasurableCandidate], target: DseTarget, runner: Runner,
                       store: MeasurementStore | None = None, builder: Builder | None = None,
                       retry_failed: bool = True, show_progress: bool = True) -> list[Record]:
    """Measure ``candidates`` (of any kind with a registered build function) on the parsed ``target``; one
    record per candidate, in order.

    Candidates the store holds a success of are not measured again (a disturbed timing was taken again
    when measured, see :class:`~tvm_dse.measure.MeasureSettings`). One that only failed is measured once
    more per call while it has failed fewer than ``FAILED_ATTEMPTS`` times (a board lost or a disk full
    passes; a kernel that cannot build stops costing a build per run), unless ``retry_failed`` is False;
    ``tvm-dse logs prune`` drops failures, so they are all tried again. All builds finish before the first
    run, so host measurements never share the CPU with the compiler; runs measuring into one store take
    turns (see :meth:`MeasurementStore.measuring`), and the one that waited measures only what the other
    did not.
    """
    resolved = [candidate.resolved(target) for candidate in candidates]
    records, missing = _held_and_missing(resolved, target, store, retry_failed)
    if missing and store is not None:
        def waiting() -> None:
            if show_progress:
                print(f"waiting for another run measuring into {store.path} to finish", file=sys.stderr, flush=True)

        with store.measuring(waiting):
            records, missing = _held_and_missing(resolved, target, store, retry_failed)  # measured meanwhile
            _measure(missing, records, target, runner, store, builder, show_progress)
    elif missing:
        _measure(missing, records, target, runner, store, builder, show_progress)
    return [records[candidate.key(target)] for candidate in resolved]


def _held_and_missing(resolved: Sequence[MeasurableCandidate], target: DseTarget, store: MeasurementStore | None,
                      retry_failed: bool) -> tuple[dict[str, Record], dict[str, MeasurableCandidate]]:
    """What the store holds for the candidates that need no measuring, and by key those that do."""
    stored = store.records() if store is not None else []  # read once for both
    known, failures = held_records(stored), failure_counts(stored) if retry_failed else {}
    records: dict[str, Record] = {}
    missing: dict[str, MeasurableCandidate] = {}
    for candidate in resolved:
        key = candidate.key(target)
        if key in known and (known[key].ok or not retry_failed or failures.get(key, 0) >= FAILED_ATTEMPTS):
            records[key] = known[key]
        else:
            missing.setdefault(key, candidate)
    return records, missing


def _measure(missing: dict[str, MeasurableCandidate], records: dict[str, Record], target: DseTarget, runner: Runner,
             store: MeasurementStore | None, builder: Builder | None, show_progress: bool) -> None:
    """Build and time the ``missing`` candidates, adding each one's record to ``records`` (and the store)."""
    if not missing:
        return
    lock = threading.Lock()
    progress = Progress(2 * len(missing), f"measuring {len(missing)} kernels on {target.key}") \
        if show_progress else None

    def keep(build: BuildResult, run: RunResult | None) -> None:
        record = _record(target.key, build, run)
        with lock:
            if store is not None:
                store.append(record)  # failed attempts too: the store is the log of what happened
            if run is not None and run.retried:
                return
            records[build.candidate.key(target)] = record
            if progress is not None:
                progress.advance(2 if run is None else 1, failed=not record.ok)

    def built(build: BuildResult) -> None:
        if not build.ok:
            keep(build, None)
        elif progress is not None:
            with lock:
                progress.advance()

    builds = (builder or Builder()).build(list(missing.values()), target, on_result=built)
    runner.run([b for b in builds if b.ok], on_result=lambda run: keep(run.build, run))
    if progress is not None:
        progress.close()
        disturbed = sum(records[key].disturbed for key in missing)
        if disturbed:
            print(f"{disturbed} of {len(missing)} kernel timings stayed disturbed after every attempt (their "
                  "samples spread, or other work was busy on the machine): kept, marked disturbed in the tuning log",
                  file=sys.stderr, flush=True)
