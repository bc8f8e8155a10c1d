"""Kernel tuning with MetaSchedule (every strategy, the host and the emulated board) and the tuning logs
(per-target stores, merge, import/export, prune, corrupt and foreign records, the logs command)."""

import json
import math

import pytest

from tvm_dse.cli import main
from tvm_dse.errors import TvmDseError
from tvm_dse.measure import LocalRunner, MeasurementSession, MeasureSettings, Record, RPCRunner, measure_candidates
from tvm_dse.strategies import Candidate, all_strategies, get_strategy, schedule_versions
from tvm_dse.target import parse_target
from tvm_dse.testing.conformance import CASES, bound, case_error
from tvm_dse.tuning import TuningLogs, kernel_records, tune_kernel
from tvm_dse.workload import Workload

pytest_plugins = ["tvm_dse.testing.pytest_plugin"]
HOST = parse_target("host")
# timings never judged disturbed: a rerun has nothing to measure again, whatever else the machine runs
QUICK = MeasureSettings(number=2, repeat=2, max_spread=math.inf, max_others=math.inf)
WORKLOAD = Workload("conv2d", 1, 16, 14, 14, 16, kernel=(3, 3), padding=(1, 1, 1, 1))
# several output channel blocks on any target (4, 8 or 16 fp32 lanes): more distinct tiles than any test tunes
TUNED = Workload("conv2d", 1, 16, 14, 14, 64, kernel=(3, 3), padding=(1, 1, 1, 1))


def _session(target, runner, store):
    return MeasurementSession(target, runner, store, show_progress=False)


def _first_case(strategy):
    """The first conformance case the strategy applies to, preferring ones with room for tiling choices."""
    return next(case for case in sorted(CASES, key=lambda c: -c.workload.macs) if strategy.applies(case.workload, HOST))


@pytest.mark.parametrize("name", [strategy.name for strategy in all_strategies()])
def test_every_strategy_tunes_and_its_tuned_kernel_is_correct(name, tmp_path):
    strategy = get_strategy(name)
    case = _first_case(strategy)
    store = TuningLogs(tmp_path).store(HOST)
    runner = LocalRunner(QUICK)
    result = tune_kernel(case.workload, strategy, _session(HOST, runner, store), trials=2, trials_per_round=2)
    assert result.measured >= 1
    assert result.trials == len(kernel_records(store, HOST, runner.thread_pool, case.workload, strategy))
    assert result.default.ok and result.best.median_ms <= result.default.median_ms
    decisions = {json.dumps(r.decisions, sort_keys=True) for r in store.records()}
    assert len(decisions) == result.trials  # every trial a distinct set of the strategy's decisions
    assert case_error(strategy, case, HOST, result.best.decisions) <= bound(strategy, HOST)


def test_a_second_tuning_run_measures_nothing_and_a_larger_budget_continues(tmp_path):
    store = TuningLogs(tmp_path).store(HOST)
    session = _session(HOST, LocalRunner(QUICK), store)
    first = tune_kernel(TUNED, "spatial_pack_nchwc", session, trials=6)
    assert first.trials == 6 and first.measured == 5
    lines = store.path.read_text().splitlines()
    again = tune_kernel(TUNED, "spatial_pack_nchwc", session, trials=6)
    assert again.measured == 0 and store.path.read_text().splitlines() == lines
    assert again.best.key == first.best.key
    more = tune_kernel(TUNED, "spatial_pack_nchwc", session, trials=9, seed=1)
    assert more.measured == 3 and more.trials == 9 and more.best.median_ms <= first.best.median_ms


def test_tuning_on_the_emulated_board_through_the_tracker(emulated_boards, tmp_path):
    board = parse_target("rpi4")
    runner = RPCRunner(tracker=emulated_boards.tracker_address, key=emulated_boards.key, settings=QUICK)
    store = TuningLogs(tmp_path).store(board)
    workload = Workload("conv2d", 1, 8, 8, 8, 16, kernel=(3, 3), padding=(1, 1, 1, 1))
    result = tune_kernel(workload, "spatial_pack_nchwc", _session(board, runner, store), trials=4)
    records = store.records()
    assert result.measured == 3 and len(records) == 4 and all(r.ok for r in records)
    assert {r.board for r in records} <= {f"127.0.0.1:{b.port}" for b in emulated_boards.boards}
    assert all(r.target == board.key for r in records) and store.path.parent.name == board.key
    again = tune_kernel(workload, "spatial_pack_nchwc", _session(board, runner, store), trials=4)
    assert again.measured == 0 and len(store.records()) == 4


def _measured(logs_root, target=HOST, workloads=(WORKLOAD,)):
    """A store of ``target`` under ``logs_root`` with the default kernels of direct_nhwc measured."""
    store = TuningLogs(logs_root).store(target)
    measure_candidates([Candidate(w, "direct_nhwc") for w in workloads], target, LocalRunner(QUICK), store,
                       show_progress=False)
    return store


def _foreign(record: Record, **changes) -> Record:
    changed = Record.from_json(record.to_json())
    for name, value in changes.items():
        setattr(changed, name, value)
    return changed


@pytest.mark.faults
def test_a_store_refuses_and_skips_records_of_another_target_or_tvm_version(tmp_path):
    store = _measured(tmp_path)
    (record,) = store.records()
    other_target = _foreign(record, target="llvm_aarch64_cortex-a72_4c", latency={**record.latency, "median_ms": 1e-9})
    other_version = _foreign(record, tvm_version="0.19.0", latency={**record.latency, "median_ms": 1e-9})
    for foreign in (other_target, other_version):
        with pytest.raises(ValueError, match="refuses a record"):
            store.append(foreign)
    with open(store.path, "a") as stream:  # a hand-copied line from another machine's log
        stream.write(other_target.to_json() + "\n" + other_version.to_json() + "\n")
    with pytest.warns(UserWarning) as caught:
        held = store.records()
    messages = [str(w.message) for w in caught]
    assert any(f"{store.path}:2: skipping a record for target llvm_aarch64" in m for m in messages)
    assert any(f"{store.path}:3: skipping a record of TVM 0.19.0" in m for m in messages)
    assert held == [record]
    with pytest.warns(UserWarning):
        best = store.best(HOST.key, schedule_versions(), record.thread_pool)
    assert best[(WORKLOAD.key(), "direct_nhwc")].median_ms == record.median_ms  # never applied


@pytest.mark.faults
def test_invalid_and_hostile_records_are_refused_on_every_way_in(tmp_path):
    store = _measured(tmp_path / "a")
    (record,) = store.records()
    good = json.loads(record.to_json())
    hostile = {"a negative latency": {"latency": {**record.latency, "median_ms": -1.0}},
               "an infinite latency": {"latency": {**record.latency, "median_ms": float("inf")}},
               "an ok record without a latency": {"latency": None},
               "a failure with a latency": {"status": "timeout"},
               "a path for a target": {"target": "../../escaped_target"},
               "a path for a TVM version": {"tvm_version": "../../0.27.0"},
               "an unknown status": {"status": "fine"},
               "decisions that are no mapping": {"decisions": [1, 2]},
               "an unknown field": {"speed": "fast"}}
    for change in hostile.values():
        with pytest.raises((ValueError, TypeError)):
            Record(**{**good, **change})  # nothing invalid is measured, appended or merged
    imported = tmp_path / "hostile.jsonl"
    imported.write_text("".join(json.dumps({**good, **change}) + "\n" for change in hostile.values())
                        + json.dumps({**good, "workload_key": "other"}) + "\n")
    logs = TuningLogs(tmp_path / "b" / "logs")
    with pytest.warns(UserWarning) as caught:
        added = logs.import_file(imported)
    lines = {int(str(w.message).split(":")[1]) for w in caught if str(w.message).startswith(f"{imported}:")}
    assert lines == set(range(1, len(hostile) + 1))  # each refused, named by file and line
    assert added == {(HOST.key, record.tvm_version): 1}
    assert set(tmp_path.rglob("*.jsonl")) == {imported, store.path, logs.store(HOST).path}  # nothing escaped
    with pytest.raises(TvmDseError, match="not a plain name"):
        logs.store("../elsewhere")


def test_merge_gives_the_union_without_duplicates_and_keeps_targets_apart(tmp_path):
    small = Workload("conv2d", 1, 8, 10, 10, 8, kernel=(3, 3), padding=(1, 1, 1, 1))
    ours = _measured(tmp_path / "ours", workloads=(WORKLOAD,))
    theirs = _measured(tmp_path / "theirs", workloads=(WORKLOAD, small))
    board_record = _foreign(theirs.records()[0], target="llvm_aarch64_cortex-a72_4c")
    TuningLogs(tmp_path / "theirs").store("llvm_aarch64_cortex-a72_4c").append(board_record)
    logs = TuningLogs(tmp_path / "ours")
    added = logs.merge(tmp_path / "theirs")
    # the faster of the two records of WORKLOAD, the record of small, and the board's record in its own store
    assert added[("llvm_aarch64_cortex-a72_4c", board_record.tvm_version)] == 1
    merged = ours.held()
    assert {r.workload_key for r in merged.values()} == {WORKLOAD.key(), small.key()}
    assert all(r.target == HOST.key for r in ours.records())
    assert logs.store("llvm_aarch64_cortex-a72_4c").records() == [board_record]
    lines = ours.path.read_text().splitlines()
    assert logs.merge(tmp_path / "theirs") == {(HOST.key, ours.tvm_version): 0,
                                               ("llvm_aarch64_cortex-a72_4c", board_record.tvm_version): 0}
    assert ours.path.read_text().splitlines() == lines  # merging again adds nothing


@pytest.mark.faults
def test_import_export_and_prune(tmp_path):
    store = _measured(tmp_path / "a")
    logs = TuningLogs(tmp_path / "a")
    exported = tmp_path / "host.jsonl"
    assert logs.export(HOST.key, exported) == 1
    with pytest.raises(TvmDseError, match="exists"):
        logs.export(HOST.key, exported)
    with pytest.raises(TvmDseError, match="no tuning log for target nowhere"):
        logs.export("nowhere", tmp_path / "x.jsonl")
    other = TuningLogs(tmp_path / "b")
    with pytest.raises(TvmDseError, match="not for target llvm_aarch64"):
        other.import_file(exported, target="llvm_aarch64_cortex-a72_4c")
    assert other.stores() == []  # nothing added by a refused import
    assert other.import_file(exported) == {(HOST.key, store.tvm_version): 1}
    assert other.store(HOST).records() == store.records()

    (record,) = store.records()
    stale = _foreign(record, schedule_version=0)
    with open(store.path, "a") as stream:
        stream.write(record.to_json() + "\n" + stale.to_json() + "\n" + '{"target": "trunc\n')
    with pytest.warns(UserWarning, match=f"{store.path}:4: skipping an unreadable"):
        assert logs.prune() == {store.path: (3, 1)}
    assert store.path.read_text().splitlines() == [record.to_json()]


def test_the_logs_command(tmp_path, capsys):
    _measured(tmp_path / "logs")
    root = str(tmp_path / "logs")
    assert main(["logs", "list", "--logs", root]) == 0
    assert f"{HOST.key}  TVM" in capsys.readouterr().out
    assert main(["logs", "show", "host", "--logs", root]) == 0
    printed = capsys.readouterr().out
    assert "3x3 s1 16->16 @14x14" in printed and "direct_nhwc" in printed
    assert f" {LocalRunner().thread_pool} " in printed  # the pool the kernel ran on
    exported = tmp_path / "out.jsonl"
    assert main(["logs", "export", HOST.key, "-o", str(exported), "--logs", root]) == 0
    assert main(["logs", "import", str(exported), "--logs", str(tmp_path / "copy")]) == 0
    assert "1 records added" in capsys.readouterr().out
    assert main(["logs", "merge", root, "--logs", str(tmp_path / "copy")]) == 0
    assert "0 records added" in capsys.readouterr().out
    assert main(["logs", "import", str(exported), "--target", "rpi4", "--logs", str(tmp_path / "copy")]) == 2
    assert "not for target llvm_aarch64" in capsys.readouterr().err
    assert main(["logs", "show", "--logs", root]) == 2
    assert "logs show needs a target" in capsys.readouterr().err
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text(exported.read_text().replace(f'"target":"{HOST.key}"', '"target":"../../escaped"'))
    assert main(["logs", "import", str(hostile), "--logs", str(tmp_path / "copy")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {hostile}:1: skipping an unreadable measurement record (target '../../escaped' is not a " \
           "plain name" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "escaped").exists()


def test_shipped_logs_seed_a_target_s_own_logs_once(tmp_path, monkeypatch):
    from tvm_dse.tuning import logs as logs_module

    shipped = _measured(tmp_path / "shipped")
    board = "llvm_aarch64_cortex-a72_4c"
    TuningLogs(tmp_path / "shipped").store(board).append(_foreign(shipped.records()[0], target=board))
    monkeypatch.setattr(logs_module, "SHIPPED_LOGS_DIR", tmp_path / "shipped")
    pool = LocalRunner().thread_pool
    assert logs_module.shipped_logs() == {HOST.key: [pool], board: [pool]}
    assert logs_module.shipped_target_keys(pool) == sorted([HOST.key, board])
    assert logs_module.shipped_target_keys("tvm,spin_count=default") == []  # timed on tvm_dse's pool
    own = TuningLogs(tmp_path / "own")
    assert own.add_shipped(HOST) == 1 and own.add_shipped(HOST) == 0
    assert own.store(HOST).records() == shipped.records()
    assert [s.target_key for s in own.stores()] == [HOST.key]  # the board's records stay in the shipped logs
