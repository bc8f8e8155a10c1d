"""Measuring kernels: the builder, the local runner, the resumable store (concurrent writers, corrupt lines)."""

import json
import math
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest

from tvm_dse.measure import (Builder, LocalRunner, MeasurementSession, MeasurementStore, MeasureSettings, Record,
                             measure_candidates)
from tvm_dse.measure.measurement import UNSETTLED_ATTEMPTS
from tvm_dse.measure.store import improves
from tvm_dse.strategies import Candidate
from tvm_dse.target import parse_target
from tvm_dse.thread_pool import POOL_VERSION, SPIN_US, spin_us
from tvm_dse.workload import Workload

HOST = parse_target("host")
WORKLOAD = Workload("conv2d", 1, 16, 14, 14, 16, kernel=(3, 3), padding=(1, 1, 1, 1))
# timings never judged disturbed: these tests check what is measured, kept and measured again, whatever else
# the machine runs (another test worker); disturbed timings are made by settings of their own below
FAST = MeasureSettings(number=2, repeat=2, max_spread=math.inf, max_others=math.inf)


@contextmanager
def _busy_machine():
    """Every core of this machine busy in other processes for the block."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def _candidates():
    # the given tile (7 pixels of a row by every output channel block) is none of the defaults for 4, 8 or 16 lanes
    blocks = WORKLOAD.out_channels // HOST.fp32_lanes
    return [Candidate(WORKLOAD, "spatial_pack_nchwc"), Candidate(WORKLOAD, "direct_nhwc"),
            Candidate(WORKLOAD, "spatial_pack_nchwc", {"oc_blocks": [1, blocks], "oh": [14, 1], "ow": [2, 7]})]


def test_measure_locally_then_resume_from_the_store(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    records = measure_candidates(_candidates(), HOST, LocalRunner(FAST), store, Builder(workers=2),
                                 show_progress=False)
    assert [r.status for r in records] == ["ok"] * 3
    assert all(r.median_ms > 0 and r.board == "local" and r.target == HOST.key for r in records)
    assert records[0].decisions != records[2].decisions  # default vs given decisions are different kernels
    lines = store.path.read_text().splitlines()
    assert len(lines) == 3
    again = measure_candidates(_candidates(), HOST, LocalRunner(FAST), store, show_progress=False)
    assert store.path.read_text().splitlines() == lines  # nothing measured twice
    assert [r.measured_at for r in again] == [r.measured_at for r in records]


def test_records_of_an_older_schedule_version_are_measured_again(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    candidate = Candidate(WORKLOAD, "direct_nhwc")
    first = measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False)[0]
    assert first.schedule_version == candidate.schedule_version
    stale = Record.from_json(first.to_json())
    stale.schedule_version = first.schedule_version - 1
    stale.latency = {**stale.latency, "median_ms": 1e-9}
    store.path.write_text(stale.to_json() + "\n")
    again = measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False)[0]
    assert again.schedule_version == first.schedule_version and again.median_ms > 1e-9
    assert len(store.records()) == 2


@pytest.mark.faults
def test_build_errors_and_timeouts_are_recorded_per_candidate(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    bad = Candidate(WORKLOAD, "spatial_pack_nchwc", {"ow": [3, 5]})
    good = Candidate(WORKLOAD, "direct_nchw")
    records = measure_candidates([bad, good], HOST, LocalRunner(FAST), store, show_progress=False)
    assert records[0].status == "build_error" and "does not split a loop of extent 14" in records[0].error
    assert records[1].status == "ok"
    slow = measure_candidates([Candidate(WORKLOAD, "direct_nhwc")], HOST, LocalRunner(FAST),
                              MeasurementStore(tmp_path / "t.jsonl"), Builder(timeout_s=0.05), show_progress=False)
    assert slow[0].status == "build_error" and "timed out after" in slow[0].error
    # a failure does not block later runs: each measures the kernel once more, until it has failed
    # UNSETTLED_ATTEMPTS times; retry_failed=False keeps the failure
    kept = measure_candidates([bad], HOST, LocalRunner(FAST), store, retry_failed=False, show_progress=False)
    assert kept[0].measured_at == records[0].measured_at and len(store.records()) == 2
    for failed in range(2, UNSETTLED_ATTEMPTS + 1):
        measure_candidates([bad, good], HOST, LocalRunner(FAST), store, show_progress=False)
        assert store.unsettled() == {records[0].key: failed}
    given_up = measure_candidates([bad], HOST, LocalRunner(FAST), store, show_progress=False)
    assert given_up[0].status == "build_error" and store.unsettled() == {records[0].key: UNSETTLED_ATTEMPTS}
    assert len(store.records()) == 1 + UNSETTLED_ATTEMPTS  # the good kernel measured once


@pytest.mark.faults
def test_a_key_is_priced_by_its_fastest_success_whatever_came_after(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    candidate = Candidate(WORKLOAD, "direct_nchw")
    (fast,) = measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False)
    slow = replace(fast, latency={**fast.latency, "median_ms": 100 * fast.median_ms})
    failed = replace(fast, status="run_error", latency=None, error="board lost")
    store.extend([slow, failed])  # a later timing under load, then a lost board
    assert store.held() == {fast.key: fast} and store.unsettled() == {}
    assert store.best(HOST.key, {"direct_nchw": fast.schedule_version},
                      fast.thread_pool)[(WORKLOAD.key(), "direct_nchw")] == fast
    again = measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False)
    assert again == [fast] and len(store.records()) == 3  # held: nothing measured


@pytest.mark.faults
def test_a_kernel_timed_on_another_thread_pool_is_timed_again_and_never_prices_it(tmp_path, monkeypatch):
    store = MeasurementStore(tmp_path / "m.jsonl")
    candidate = Candidate(WORKLOAD, "direct_nchw")
    versions = {"direct_nchw": candidate.schedule_version}
    pool = LocalRunner().thread_pool
    assert pool == f"tvm_dse,version={POOL_VERSION},spin_us={spin_us()}"  # tvm_dse's own pool, in this process
    # timed before records named their pool, on TVM's pool, and on this pool's first version (named without
    # one): faster, but none is this pool's price
    earlier = [Record(HOST.key, WORKLOAD.to_dict(), WORKLOAD.key(), "direct_nchw",
                      candidate.resolved(HOST).decisions, "ok", latency={"median_ms": 1e-6}, thread_pool=other)
               for other in ("", "tvm,spin_count=0", f"tvm_dse,spin_us={spin_us()}")]
    store.extend(earlier)
    assert Record.from_json(json.dumps({k: v for k, v in json.loads(earlier[0].to_json()).items()
                                        if k != "thread_pool"})) == earlier[0]  # a line without the field
    assert store.best(HOST.key, versions, pool) == {}
    (measured,) = measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False)
    assert measured.thread_pool == pool and measured.median_ms > 1e-6 and len(store.records()) == 4
    assert store.best(HOST.key, versions, pool)[(WORKLOAD.key(), "direct_nchw")] == measured
    # the same pool with its workers sleeping at once is another pool: timed again, under its own key
    monkeypatch.setenv(SPIN_US, "0")
    (sleeping,) = measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False)
    assert sleeping.thread_pool == f"tvm_dse,version={POOL_VERSION},spin_us=0" and len(store.records()) == 5
    assert len({record.key for record in store.records()}) == 5


@pytest.mark.faults
def test_a_disturbed_timing_is_measured_again_by_later_runs_and_never_prices_over_a_quiet_one(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    candidate = Candidate(WORKLOAD, "direct_nchw")
    (quiet,) = measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False)
    disturbed = replace(quiet, latency={**quiet.latency, "median_ms": 10 * quiet.median_ms, "disturbed": True})
    assert disturbed.disturbed and not disturbed.trusted and quiet.trusted
    lost = replace(quiet, status="run_error", latency=None, error="board lost")
    assert improves(disturbed, lost) and not improves(lost, disturbed) and improves(quiet, disturbed)
    store.path.write_text(disturbed.to_json() + "\n")  # as if the only timing had been taken under load
    kept = measure_candidates([candidate], HOST, LocalRunner(FAST), store, retry_failed=False, show_progress=False)
    assert kept == [disturbed] and store.unsettled() == {disturbed.key: 1}
    with _busy_machine():  # it would be disturbed again: kept until the machine is quiet
        assert measure_candidates([candidate], HOST, LocalRunner(MeasureSettings(number=2, repeat=2)), store,
                                  show_progress=False) == [disturbed]
    assert len(store.records()) == 1
    (again,) = measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False)
    assert again.trusted and store.held() == {again.key: again} and store.unsettled() == {}
    assert measure_candidates([candidate], HOST, LocalRunner(FAST), store, show_progress=False) == [again]
    assert len(store.records()) == 2  # measured again once: the quiet timing settles the kernel
    # a disturbed timing that came out faster still loses to a quiet one, in the store and in the search's prices
    lucky = replace(disturbed, latency={**disturbed.latency, "median_ms": again.median_ms / 10})
    store.append(lucky)
    assert store.held() == {again.key: again}
    assert store.best(HOST.key, {"direct_nchw": again.schedule_version},
                      again.thread_pool)[(WORKLOAD.key(), "direct_nchw")] == again
    # a machine busy run after run: after UNSETTLED_ATTEMPTS disturbed timings the best of them is kept
    busy = MeasurementStore(tmp_path / "busy.jsonl")
    busy.extend(replace(disturbed, latency={**disturbed.latency, "median_ms": (2 + attempt) * quiet.median_ms})
                for attempt in range(UNSETTLED_ATTEMPTS))
    (given_up,) = measure_candidates([candidate], HOST, LocalRunner(FAST), busy, show_progress=False)
    assert given_up.disturbed and given_up.median_ms == 2 * quiet.median_ms
    assert len(busy.records()) == UNSETTLED_ATTEMPTS and busy.unsettled() == {given_up.key: UNSETTLED_ATTEMPTS}


@pytest.mark.faults
def test_a_kernel_timed_while_another_process_is_busy_is_taken_again_and_flagged(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    candidate = Candidate(WORKLOAD, "direct_nchw")
    # each attempt lasts 5 x 50 ms: long enough for the machine's CPU accounting to tell who was busy
    watched = MeasureSettings(number=1, repeat=5, min_repeat_ms=50)
    with _busy_machine():
        (disturbed,) = measure_candidates([candidate], HOST, LocalRunner(watched), store, show_progress=False)
    assert disturbed.ok and disturbed.disturbed
    assert disturbed.latency["runs"] >= watched.attempts * watched.repeat  # every attempt was taken
    assert store.records() == [disturbed]


@pytest.mark.faults
def test_short_kernel_timings_are_watched_together_taken_again_under_load_and_flagged(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    # each timing lasts a few milliseconds: too short alone for the machine's CPU accounting to tell
    short = MeasureSettings(number=2, repeat=3)
    with _busy_machine():
        records = measure_candidates(_candidates(), HOST, LocalRunner(short), store, show_progress=False)
    assert all(record.ok and record.disturbed for record in records)
    # every window was timed again, attempts times in all: each kernel at least once per window
    assert all(record.latency["runs"] >= short.attempts * (short.warmup + short.number * short.repeat)
               for record in records)
    assert sorted(store.records(), key=lambda r: r.key) == sorted(records, key=lambda r: r.key)


@pytest.mark.faults
def test_corrupt_and_truncated_lines_are_skipped_with_a_warning(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    record = Record(HOST.key, WORKLOAD.to_dict(), WORKLOAD.key(), "direct_nchw", {"k": [4, 4]}, "ok",
                    latency={"median_ms": 1.0})
    store.append(record)
    with open(store.path, "a") as stream:
        stream.write("this is not json\n")
        stream.write(record.to_json()[:40] + "\n")
    store.append(record)
    with pytest.warns(UserWarning) as caught:
        records = store.records()
    messages = [str(w.message) for w in caught]
    assert any("m.jsonl:2: skipping an unreadable" in m for m in messages)
    assert any("m.jsonl:3: skipping an unreadable" in m for m in messages)
    assert len(records) == 2 and records[0].key == record.key


def _append_many(path: str, writer: int, count: int) -> None:
    store = MeasurementStore(path)
    for index in range(count):
        store.append(Record("t", {"writer": writer, "index": index, "padding": "x" * 3000}, f"w{writer}-{index}",
                            "s", {}, "ok", latency={"median_ms": float(index + 1)}))


@pytest.mark.faults
def test_two_writers_do_not_corrupt_the_store(tmp_path):
    path = str(tmp_path / "shared.jsonl")
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(path, w, 150)) for w in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    lines = open(path).read().splitlines()
    assert len(lines) == 300
    assert sorted(json.loads(line)["workload_key"] for line in lines) == sorted(
        f"w{w}-{i}" for w in range(2) for i in range(150))


def test_a_rewrite_while_another_process_appends_loses_nothing(tmp_path):
    """``tvm-dse logs prune`` rewrites a store in place while a running optimize may append to it."""
    path = str(tmp_path / "shared.jsonl")
    writer = multiprocessing.get_context("spawn").Process(target=_append_many, args=(path, 0, 300))
    writer.start()
    store, rewrites = MeasurementStore(path), 0
    while writer.is_alive():
        rewrites += store.rewrite(lambda records: records) != (0, 0)
    writer.join(120)
    assert writer.exitcode == 0 and rewrites > 0
    lines = open(path).read().splitlines()
    assert sorted(json.loads(line)["workload_key"] for line in lines) == sorted(f"w0-{i}" for i in range(300))


def test_an_interrupted_run_resumes_without_measuring_twice(tmp_path):
    store_path = tmp_path / "m.jsonl"
    workloads = [Workload("conv2d", 1, 8, size, size, 8, kernel=(3, 3), padding=(1, 1, 1, 1)) for size in range(6, 12)]
    script = textwrap.dedent(f"""
        import math
        from tvm_dse.measure import *
        from tvm_dse.strategies import Candidate
        from tvm_dse.target import parse_target
        from tvm_dse.workload import Workload
        workloads = [Workload.from_dict(w) for w in {[w.to_dict() for w in workloads]!r}]
        measure_candidates([Candidate(w, "direct_nchw") for w in workloads], parse_target("host"),
                           LocalRunner(MeasureSettings(number=2, repeat=2, cooldown_ms=1500, max_spread=math.inf,
                                                       max_others=math.inf)),
                           MeasurementStore({str(store_path)!r}), show_progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (not store_path.exists() or len(store_path.read_text().splitlines()) < 2):
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait()
    interrupted = MeasurementStore(store_path).held()
    assert 2 <= len(interrupted) < len(workloads)
    records = measure_candidates([Candidate(w, "direct_nchw") for w in workloads], HOST, LocalRunner(FAST),
                                 MeasurementStore(store_path), show_progress=False)
    assert all(r.ok for r in records)
    keys = [json.loads(line)["workload_key"] for line in store_path.read_text().splitlines()]
    assert sorted(keys) == sorted(w.key() for w in workloads)  # each measured exactly once


@pytest.mark.faults
def test_runs_measuring_into_one_store_take_turns_and_measure_each_kernel_once(tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    workloads = [Workload("conv2d", 1, 8, size, size, 8, kernel=(3, 3), padding=(1, 1, 1, 1)) for size in (6, 7, 8)]
    script = textwrap.dedent(f"""
        import math
        from tvm_dse.measure import *
        from tvm_dse.strategies import Candidate
        from tvm_dse.target import parse_target
        from tvm_dse.workload import Workload
        workloads = [Workload.from_dict(w) for w in {[w.to_dict() for w in workloads]!r}]
        measure_candidates([Candidate(w, "direct_nchw") for w in workloads], parse_target("host"),
                           LocalRunner(MeasureSettings(number=2, repeat=2, max_spread=math.inf, max_others=math.inf)),
                           MeasurementStore({str(store.path)!r}))
    """)
    logs = [tmp_path / f"run{index}.err" for index in range(2)]
    with store.measuring():  # a third run measuring: the two wait for it, then for each other
        runs = []
        for log in logs:
            with open(log, "w") as stderr:
                runs.append(subprocess.Popen([sys.executable, "-c", script], stderr=stderr))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all("waiting for another run measuring into" in log.read_text()
                                                      for log in logs):
            time.sleep(0.2)
        assert all("waiting for another run" in log.read_text() for log in logs)
        assert not store.records()  # nothing measured while another run holds the store
    for run in runs:
        assert run.wait(300) == 0
    keys = [record.workload_key for record in store.records()]
    assert sorted(keys) == sorted(w.key() for w in workloads)  # each kernel measured once, by one of them


def test_cache_flush_and_cooldown_settings(tmp_path):
    settings = MeasureSettings(number=1, repeat=3, flush_cache=True, cooldown_ms=10, min_repeat_ms=1)
    session = MeasurementSession(HOST, LocalRunner(settings), MeasurementStore(tmp_path / "m.jsonl"),
                                 show_progress=False)
    (record,) = session.measure([Candidate(WORKLOAD, "direct_nchw")])
    assert record.ok and record.latency["repeats"] == 3


def test_layout_conversions_are_measured_like_kernels(tmp_path):
    from tvm_dse.conversions import Conversion

    store = MeasurementStore(tmp_path / "m.jsonl")
    conversions = [Conversion((1, 16, 14, 14), "NCHW", "NCHW8c"), Conversion((1, 16, 14, 14), "NCHW8c", "NHWC")]
    records = measure_candidates(conversions, HOST, LocalRunner(FAST), store, show_progress=False)
    assert [r.strategy for r in records] == ["convert_NCHW_to_NCHW8c", "convert_NCHW8c_to_NHWC"]
    assert all(r.ok and r.median_ms > 0 and r.workload == {"shape": [1, 16, 14, 14]} for r in records)
    again = measure_candidates(conversions, HOST, LocalRunner(FAST), store, show_progress=False)
    assert [r.measured_at for r in again] == [r.measured_at for r in records] and len(store.records()) == 2


class _Unregistered:
    """A candidate of a kind nobody registered a build function for."""

    kind = "no_such_kind"
    strategy = "nothing"
    decisions: dict = {}

    def describe(self):
        return "an unregistered candidate"


@pytest.mark.faults
def test_a_kind_without_an_importable_build_function_is_refused_before_building(tmp_path):
    from tvm_dse.measure import register_build_function

    with pytest.raises(ValueError, match="no build function is registered for an unregistered candidate"):
        Builder(directory=tmp_path).build([_Unregistered(), Candidate(WORKLOAD, "direct_nchw")], HOST)
    assert not list(tmp_path.iterdir())  # nothing was built

    def local(spec, target):
        raise AssertionError("never called")

    for function in (local, lambda spec, target: None):
        with pytest.raises(ValueError, match="must be defined at the top level of an importable module"):
            register_build_function("no_such_kind", function)


def test_a_session_runs_a_whole_model_through_its_runner(tmp_path):
    import numpy as np

    from tvm_dse.timing import SteadyState, Timing

    class Built:  # what the local runner asks of a BuiltModel
        def run(self, feed):
            return [feed["x"] * 2]

        def time(self, feed, settings):
            return Timing.from_seconds([1e-3] * settings.repeats)

    run = MeasurementSession(HOST, LocalRunner(FAST), show_progress=False).run_model(
        Built(), {"x": np.ones(3)}, SteadyState(repeats=4), workdir=tmp_path)
    assert run.board == "local" and run.timing.repeats == 4 and run.outputs[0].tolist() == [2.0, 2.0, 2.0]
