"""Measuring candidates end to end: skip what the store already has, build the rest in parallel, time
them with a runner, and append every result or failure to the store as it arrives."""

from __future__ import annotations

import functools
import sys
import threading
from typing import Callable, Sequence

from ..progress import Progress
from ..target import DseTarget
from .builder import Builder, BuildResult
from .candidate import MeasurableCandidate
from .runner import RunResult, Runner
from .store import MeasurementStore, Record, held_records, unsettled_counts

# Measurements of one kernel that failed or stayed disturbed, after which later runs keep the best of them
# instead of measuring it again
UNSETTLED_ATTEMPTS = 3


def _record(target_key: str, thread_pool: str, build: BuildResult, run: RunResult | None) -> Record:
    candidate = build.candidate
    common = dict(target=target_key, workload=candidate.workload_dict(), workload_key=candidate.workload_key,
                  strategy=candidate.strategy, schedule_version=candidate.schedule_version,
                  decisions=dict(candidate.decisions), thread_pool=thread_pool)
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

    Candidates the store holds a quiet success of are not measured again. One it holds only failures of
    is measured once more per call while it has fewer than ``UNSETTLED_ATTEMPTS`` failed or disturbed
    records (a board lost or a disk full passes; a kernel that cannot build stops costing a build per run),
    and one it holds only disturbed timings of (each was taken again while it was measured, see
    :class:`~tvm_dse.measure.MeasureSettings`: other work was busy throughout) likewise, when the runner
    finds the target quiet now (:meth:`Runner.busy`; on a busy machine it would be disturbed again).
    ``retry_failed`` False keeps what the store holds; ``tvm-dse logs prune`` drops failures, so they are
    all tried again. All builds finish before the first run, so host measurements never share the CPU
    with the compiler; runs measuring into one store take turns (see :meth:`MeasurementStore.measuring`),
    and the one that waited measures only what the other did not.
    """
    resolved = [candidate.resolved(target) for candidate in candidates]
    thread_pool = runner.thread_pool
    busy = functools.cache(runner.busy)  # asked once per call, and only if a disturbed timing is held
    records, missing, kept = _held_and_missing(resolved, target, thread_pool, store, retry_failed, busy)
    if missing and store is not None:
        def waiting() -> None:
            if show_progress:
                print(f"waiting for another run measuring into {store.path} to finish", file=sys.stderr, flush=True)

        with store.measuring(waiting):
            # what the other run measured meanwhile
            records, missing, kept = _held_and_missing(resolved, target, thread_pool, store, retry_failed, busy)
            _measure(missing, records, target, thread_pool, runner, store, builder, show_progress)
    elif missing:
        _measure(missing, records, target, thread_pool, runner, store, builder, show_progress)
    if kept and show_progress:
        print(f"{kept} kernel timing(s) that stayed disturbed kept as the tuning log holds them, not measured again "
              f"now: {busy()}", file=sys.stderr, flush=True)
    return [records[candidate.key(target, thread_pool)] for candidate in resolved]


def _held_and_missing(resolved: Sequence[MeasurableCandidate], target: DseTarget, thread_pool: str,
                      store: MeasurementStore | None, retry_failed: bool, busy: Callable[[], str]
                      ) -> tuple[dict[str, Record], dict[str, MeasurableCandidate], int]:
    """What the store holds for the candidates that need no measuring, by key those that do, and how many
    disturbed timings are kept only because the target is ``busy``."""
    stored = store.records() if store is not None else []  # read once for both
    known, unsettled = held_records(stored), unsettled_counts(stored) if retry_failed else {}
    records: dict[str, Record] = {}
    missing: dict[str, MeasurableCandidate] = {}
    kept = 0
    for candidate in resolved:
        key = candidate.key(target, thread_pool)
        held = known.get(key)
        retry = retry_failed and held is not None and not held.trusted and unsettled.get(key, 0) < UNSETTLED_ATTEMPTS
        if held is None or (retry and (not held.ok or not busy())):
            missing.setdefault(key, candidate)
        else:
            kept += retry and key not in records
            records[key] = held
    return records, missing, kept


def _measure(missing: dict[str, MeasurableCandidate], records: dict[str, Record], target: DseTarget, thread_pool: str,
             runner: Runner, store: MeasurementStore | None, builder: Builder | None, show_progress: bool) -> None:
    """Build and time the ``missing`` candidates, adding each one's record to ``records`` (and the store)."""
    if not missing:
        return
    lock = threading.Lock()
    progress = Progress(2 * len(missing), f"{runner.verb} {len(missing)} kernels on {target.key}") \
        if show_progress else None

    def keep(build: BuildResult, run: RunResult | None) -> None:
        record = _record(target.key, thread_pool, build, run)
        with lock:
            if store is not None:
                store.append(record)  # failed attempts too: the store is the log of what happened
            if run is not None and run.retried:
                return
            records[build.candidate.key(target, thread_pool)] = record
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
                  "samples spread, or other work was busy on the machine): kept, marked disturbed in the tuning "
                  "log; a later run measures them again when the machine is quiet",
                  file=sys.stderr, flush=True)
