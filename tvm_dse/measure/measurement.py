"""Measuring candidates end to end: skip what the store already has, build the rest in parallel, time
them with a runner, and append every result or failure to the store as it arrives."""

from __future__ import annotations

import threading
from typing import Sequence

from ..progress import Progress
from ..target import DseTarget
from .builder import Builder, BuildResult
from .candidate import MeasurableCandidate
from .runner import RunResult, Runner
from .store import MeasurementStore, Record


def _record(target_key: str, build: BuildResult, run: RunResult | None) -> Record:
    candidate = build.candidate
    common = dict(target=target_key, workload=candidate.workload_dict(), workload_key=candidate.workload_key,
                  strategy=candidate.strategy, schedule_version=candidate.schedule_version,
                  decisions=dict(candidate.decisions))
    if run is None:
        return Record(**common, status="build_error", error=build.error)
    if run.status != "ok":
        return Record(**common, status=run.status, error=run.error, board=run.board)
    return Record(**common, status="ok", latency=run.timing.to_dict(), board=run.board)


def measure_candidates(candidates: Sequence[MeasurableCandidate], target: DseTarget, runner: Runner,
                       store: MeasurementStore | None = None, builder: Builder | None = None,
                       retry_failed: bool = False, show_progress: bool = True) -> list[Record]:
    """Measure ``candidates`` (of any kind with a registered build function) on the parsed ``target``; one
    record per candidate, in order.

    Candidates whose key the store already holds are not measured again (failed ones neither, unless
    ``retry_failed``). All builds finish before the first run, so host measurements never share the
    CPU with the compiler.
    """
    resolved = [candidate.resolved(target) for candidate in candidates]
    known = store.latest() if store is not None else {}
    records: dict[str, Record] = {}
    missing: dict[str, MeasurableCandidate] = {}
    for candidate in resolved:
        key = candidate.key(target)
        if key in known and (known[key].ok or not retry_failed):
            records[key] = known[key]
        else:
            missing.setdefault(key, candidate)
    if missing:
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
    return [records[candidate.key(target)] for candidate in resolved]
