"""The emulated aarch64 board: cross-compiled kernels run through the tracker; the board command."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import rpc

from tvm_dse.cli import main
from tvm_dse.layouts import Layout
from tvm_dse.strategies import build_kernel, get_strategy
from tvm_dse.target import parse_target
from tvm_dse.testing import relative_error
from tvm_dse.board import REGISTER_TIMEOUT_S, free_port, load_cluster, start_board, supervise
from tvm_dse.testing.conformance import CASES, bound, input_quant, random_operands, strategy_reference

pytest_plugins = ["tvm_dse.testing.pytest_plugin"]


@pytest.mark.parametrize("strategy, case_id, target", [
    ("spatial_pack_nchwc", "3x3_s1_batch2", "rpi4"), ("direct_nhwc", "7x7_s2_rgb", "rpi4"),
    ("direct_nchw", "3x3_s3_asym_pad", "rpi4"),
    # sdot (+dotprod) and fp16 arithmetic (+fullfp16), run by the emulated CPU
    ("spatial_pack_nchwc_int8", "3x3_s1_batch2", "rpi5"), ("spatial_pack_nchwc_fp16", "3x3_s1_batch2", "rpi5")])
def test_cross_compiled_strategy_matches_on_the_board(emulated_boards, tmp_path, strategy, case_id, target):
    case = next(c for c in CASES if c.id == case_id)
    operands = random_operands(case.workload, case.epilogue)
    built = build_kernel(strategy, case.workload, parse_target(target), case.epilogue,
                         quant=input_quant(built_strategy := get_strategy(strategy), operands["data"]))
    library = built.export(tmp_path / "kernel.so")
    remote = rpc.connect_tracker("127.0.0.1", emulated_boards.tracker_port).request(emulated_boards.key,
                                                                                      session_timeout=120)
    remote.upload(str(library))
    module = remote.load_module(library.name)
    device = remote.cpu(0)
    arguments = [tvm.runtime.tensor(a.numpy(), device) for a in built.arguments(**operands)]
    module["main"](*arguments)
    output = Layout.parse(built.strategy.layouts(case.workload, built.target).output).to_nchw(arguments[-1].numpy())
    expected = strategy_reference(built_strategy, built.target, **operands, workload=case.workload,
                                  epilogue=case.epilogue)
    assert relative_error(output, expected) <= bound(built_strategy, built.target)
    assert np.abs(expected).max() > 0


@pytest.mark.faults
def test_board_command_up_status_down(capsys):
    port = free_port()
    assert main(["board", "up", "--boards", "1", "--tracker-port", str(port), "--key", "cli-test"]) == 0
    cluster = load_cluster()
    try:
        assert cluster.tracker_port == port and cluster.key == "cli-test"
        assert main(["board", "status"]) == 0
        assert "1 registered as 'cli-test'; supervisor up, 0 restart(s)" in capsys.readouterr().out
        assert main(["board", "up", "--tracker-port", str(port)]) == 2
        assert "already up" in capsys.readouterr().err
        # the supervisor starts a board whose process died again, on its port, and records it
        cluster.boards[0].kill(signal.SIGKILL)
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while time.monotonic() < deadline and not (load_cluster().restarts == 1 and load_cluster().registered() == 1):
            time.sleep(1)
        restarted = load_cluster()
        assert restarted.restarts == 1 and restarted.registered() == 1
        assert restarted.boards[0].port == cluster.boards[0].port and restarted.boards[0].pid != cluster.boards[0].pid
        assert "restarted as pid" in Path(restarted.supervisor.log).read_text()
    finally:
        assert main(["board", "down"]) == 0
    processes = [restarted.supervisor, restarted.tracker, *restarted.boards, *cluster.boards]
    assert not any(process.alive() for process in processes)
    assert load_cluster() is None


# --- measuring on boards through the tracker --------------------------------------------------------

from tvm_dse.measure import (MeasurementError, MeasurementStore, MeasureSettings, RPCRunner,  # noqa: E402
                             measure_candidates)
from tvm_dse.strategies import Candidate  # noqa: E402
from tvm_dse.workload import Workload  # noqa: E402

BOARD_TARGET = parse_target("rpi4")
SMALL = [Workload("conv2d", 1, 8, size, size, 8, kernel=(3, 3), padding=(1, 1, 1, 1)) for size in (6, 7, 8, 9, 10, 11)]
QUICK = MeasureSettings(number=2, repeat=2)


def _batch():
    return [Candidate(w, "spatial_pack_nchwc") for w in SMALL]


def test_two_boards_measure_a_batch_in_parallel(emulated_boards, tmp_path):
    runner = RPCRunner(tracker=emulated_boards.tracker_address, key=emulated_boards.key, settings=QUICK)
    assert len(runner.boards()) == 2
    emulated_boards.wait_free()  # an earlier test's session may still hold a board
    records = measure_candidates(_batch(), BOARD_TARGET, runner, MeasurementStore(tmp_path / "m.jsonl"),
                                 show_progress=False)
    assert all(r.ok and r.median_ms > 0 for r in records)
    assert len({r.board for r in records}) == 2  # both boards took candidates
    assert {r.board for r in records} <= {f"127.0.0.1:{b.port}" for b in emulated_boards.boards}


@pytest.mark.faults
def test_ctrl_c_while_boards_measure_starts_no_other_candidate(emulated_boards, tmp_path):
    store = MeasurementStore(tmp_path / "m.jsonl")
    # a second or more per candidate: the signal comes while both boards hold one
    runner = RPCRunner(tracker=emulated_boards.tracker_address, key=emulated_boards.key,
                       settings=MeasureSettings(number=1, repeat=2, min_repeat_ms=500))
    emulated_boards.wait_free()
    seen = []

    def ctrl_c_after_first_result() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not seen:
            if store.path.exists() and store.path.read_text().strip():
                seen.append(len(store.records()))
            time.sleep(0.05)
        # Ctrl-C's signal goes to any thread of the process: here one that is not the main thread
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    handled = []

    def interrupt(*_) -> None:
        # the main thread takes the signal up to a join's wait later: a board may start a candidate meanwhile
        handled.append(len(store.records()))
        raise KeyboardInterrupt

    interrupter = threading.Thread(target=ctrl_c_after_first_result, daemon=True)
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            measure_candidates(_batch(), BOARD_TARGET, runner, store, show_progress=False)
        interrupter.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    emulated_boards.wait_free()  # the candidates on the boards when Ctrl-C came have finished
    time.sleep(2)
    # at most those in flight when it was taken were recorded after it, and what was recorded is whole
    assert seen and handled and seen[0] <= handled[0]
    assert handled[0] <= len(store.records()) <= handled[0] + len(emulated_boards.boards) < len(_batch())
    assert all(record.ok for record in store.records())


@pytest.mark.faults
def test_a_board_killed_mid_run_loses_nothing(board_cluster_factory, tmp_path):
    cluster = board_cluster_factory(boards=2)
    store = MeasurementStore(tmp_path / "m.jsonl")
    runner = RPCRunner(tracker=cluster.tracker_address, key=cluster.key, settings=MeasureSettings(number=3, repeat=3),
                       session_timeout_s=60, connect_timeout_s=60)
    killed = []

    def kill_the_first_to_finish() -> None:
        # the board that measured first holds a session and takes the next of the candidates left at once (a
        # board whose session had not started when killed is only never handed out: nothing to record)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (store.path.exists() and store.path.read_text().strip()):
            time.sleep(0.05)
        first = store.records()[0].board
        killed.append(next(board for board in cluster.boards if first == f"127.0.0.1:{board.port}"))
        killed[0].kill(9)

    killer = threading.Thread(target=kill_the_first_to_finish, daemon=True)
    killer.start()
    records = measure_candidates(_batch(), BOARD_TARGET, runner, store, show_progress=False)
    killer.join()
    (victim,) = killed
    assert not victim.alive()
    assert all(r.ok for r in records), [r.error for r in records if not r.ok]
    failures = [r for r in store.records() if not r.ok]
    # the session dropped (a time-out) or the call failed on the dying board: named, either way
    assert failures and all(f"board 127.0.0.1:{victim.port}" in f.error for f in failures), failures
    assert all(r.status in ("timeout", "run_error") and "spatial_pack_nchwc on" in r.error for r in failures), failures
    assert {r.key for r in records} == {r.key for r in store.records() if r.ok}


@pytest.mark.faults
def test_a_board_that_fails_what_the_others_run_is_left_out_and_nothing_is_lost(board_cluster_factory, tmp_path,
                                                                                 capfd):
    cluster = board_cluster_factory(boards=1)
    # an x86 RPC server registered under the boards' key: every aarch64 library fails to load on it
    impostor_port = free_port()
    impostor = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port",
                                 str(impostor_port), "--port-end", str(impostor_port + 1), "--tracker",
                                 cluster.tracker_address, "--key", cluster.key], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and cluster.registered() < 2:
            time.sleep(0.5)
        # the emulated board rests after each candidate: the impostor fails most of them first
        runner = RPCRunner(tracker=cluster.tracker_address, key=cluster.key,
                           settings=MeasureSettings(number=2, repeat=2, cooldown_ms=1500))
        store = MeasurementStore(tmp_path / "m.jsonl")
        records = measure_candidates(_batch(), BOARD_TARGET, runner, store, show_progress=False)
    finally:
        os.killpg(impostor.pid, signal.SIGKILL)
        impostor.wait()
    wrong = f"127.0.0.1:{impostor_port}"
    assert all(r.ok and r.board == f"127.0.0.1:{cluster.boards[0].port}" for r in records)
    failures = [r for r in store.records() if not r.ok]
    # each candidate failed at most once there: its retry went to the other board
    assert failures and all(f.board == wrong for f in failures), [(f.board, f.error) for f in failures]
    assert len({f.key for f in failures}) == len(failures), [(f.board, f.error) for f in failures]
    assert f"board {wrong} failed 3 candidates in a row that other boards ran: it is left out" in capfd.readouterr().err


@pytest.mark.faults
def test_the_supervisor_restarts_a_board_that_does_not_serve_or_died(board_cluster_factory, tmp_path):
    cluster = board_cluster_factory(boards=1)
    # a board alive but registered with no tracker (this one's address was dead when it started)
    first = cluster.boards[0]
    first.kill(signal.SIGKILL)
    cluster.boards[0] = start_board(first.port, tmp_path, tracker=f"127.0.0.1:{free_port()}", key=cluster.key)
    unserving = cluster.boards[0]
    stop = threading.Event()
    restarts = []
    supervisor = threading.Thread(target=supervise, args=(cluster, stop, lambda old, new, why: restarts.append(why)),
                                  kwargs=dict(register_timeout_s=30, period_s=0.5), daemon=True)
    supervisor.start()
    runner = RPCRunner(tracker=cluster.tracker_address, key=cluster.key, settings=QUICK, connect_timeout_s=120)
    try:
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while time.monotonic() < deadline and not (restarts and cluster.registered() == 1):
            time.sleep(0.5)
        # (a board that starts slower than that on a loaded machine is started once more)
        assert restarts and set(restarts) == {"it did not register with the tracker within 30 s of its start"}
        second = cluster.boards[0]
        assert second.port == first.port and second.pid != unserving.pid and not unserving.alive()
        (record,) = measure_candidates(_batch()[:1], BOARD_TARGET, runner, MeasurementStore(tmp_path / "a.jsonl"),
                                       show_progress=False)
        assert record.ok and record.board == f"127.0.0.1:{second.port}"
        # its serving process killed, the board's process exits: started again
        for child in subprocess.run(["pgrep", "-P", str(second.pid)], capture_output=True, text=True).stdout.split():
            os.kill(int(child), signal.SIGKILL)
        before = len(restarts)
        while time.monotonic() < deadline and not (len(restarts) > before and cluster.registered() == 1):
            time.sleep(0.5)
        assert restarts[before] == "its process exited" and cluster.restarts == len(restarts)
        (record,) = measure_candidates(_batch()[1:2], BOARD_TARGET, runner, MeasurementStore(tmp_path / "b.jsonl"),
                                       show_progress=False)
        assert record.ok and record.board == f"127.0.0.1:{cluster.boards[0].port}"
    finally:
        stop.set()
        supervisor.join()


@pytest.mark.faults
def test_a_session_time_out_names_the_board_and_the_candidate(emulated_boards, tmp_path):
    runner = RPCRunner(tracker=emulated_boards.tracker_address, key=emulated_boards.key, attempts=2,
                       settings=MeasureSettings(number=200000, repeat=50), session_timeout_s=3)
    (record,) = measure_candidates([Candidate(SMALL[-1], "direct_nchw")], BOARD_TARGET, runner,
                                   MeasurementStore(tmp_path / "m.jsonl"), show_progress=False)
    assert record.status == "timeout"
    assert "direct_nchw on 3x3 s1 8->8 @11x11" in record.error and "timed out" in record.error
    assert "board 127.0.0.1:" in record.error and "attempt 2 of 2" in record.error


@pytest.mark.faults
def test_unreachable_tracker_and_unknown_key_fail_fast_and_clearly(emulated_boards):
    start = time.monotonic()
    with pytest.raises(MeasurementError, match=r"cannot reach the RPC tracker at 127\.0\.0\.1:"):
        RPCRunner(tracker=f"127.0.0.1:{free_port()}", key="any", connect_timeout_s=5).boards()
    with pytest.raises(MeasurementError, match=r"no board is registered under key 'nope'.*qemu-aarch64"):
        RPCRunner(tracker=emulated_boards.tracker_address, key="nope", connect_timeout_s=5).boards()
    with pytest.raises(MeasurementError, match="HOST:PORT"):
        RPCRunner(tracker="localhost", key="x")
    assert time.monotonic() - start < 30
    # every board of the key in another client's session
    emulated_boards.wait_free()
    tracker = rpc.connect_tracker(emulated_boards.host, emulated_boards.tracker_port)
    held = [tracker.request(emulated_boards.key) for _ in emulated_boards.boards]
    with pytest.raises(MeasurementError, match=r"within 3 s: the key is busy: its 2 board\(s\) are all in sessions"):
        RPCRunner(tracker=emulated_boards.tracker_address, key=emulated_boards.key, connect_timeout_s=3).session()
    del held


@pytest.mark.faults
def test_a_rerun_after_an_interrupted_board_run_measures_nothing_twice(board_cluster_factory, tmp_path):
    # TVM 0.27's RPC server stops serving after a client is killed mid-session, so the interrupted run
    # gets boards of its own and the rerun fresh ones: what is under test is the store
    interrupted = board_cluster_factory(boards=2)
    store_path = tmp_path / "m.jsonl"
    script = textwrap.dedent(f"""
        from tvm_dse.measure import *
        from tvm_dse.strategies import Candidate
        from tvm_dse.target import parse_target
        from tvm_dse.workload import Workload
        workloads = [Workload.from_dict(w) for w in {[w.to_dict() for w in SMALL]!r}]
        runner = RPCRunner(tracker={interrupted.tracker_address!r}, key={interrupted.key!r},
                           settings=MeasureSettings(number=2, repeat=2, cooldown_ms=2000))
        measure_candidates([Candidate(w, "spatial_pack_nchwc") for w in workloads],
                           parse_target({BOARD_TARGET.to_dict()!r}), runner, MeasurementStore({str(store_path)!r}),
                           show_progress=False)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (not store_path.exists() or not store_path.read_text().strip()):
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    interrupted.stop()
    done_before = {r.key for r in MeasurementStore(store_path).records() if r.ok}
    assert 1 <= len(done_before) < len(SMALL)
    fresh = board_cluster_factory(boards=2)
    runner = RPCRunner(tracker=fresh.tracker_address, key=fresh.key, settings=QUICK)
    records = measure_candidates(_batch(), BOARD_TARGET, runner, MeasurementStore(store_path), show_progress=False)
    assert all(r.ok for r in records)
    ok_keys = [r.key for r in MeasurementStore(store_path).records() if r.ok]
    assert sorted(ok_keys) == sorted({r.key for r in records})  # each measured exactly once


def test_a_board_reached_directly_without_a_tracker(tmp_path):
    from tvm_dse.board import start_board, wait_for_port

    board = start_board(log_dir=tmp_path)
    try:
        wait_for_port(board.port, timeout=120)
        # The first session of a fresh emulated board runs the runtime's code through qemu for the first
        # time: on a loaded 2-core machine it once took over the default 120 s session limit.
        runner = RPCRunner(direct=f"127.0.0.1:{board.port}", settings=QUICK, connect_timeout_s=60,
                           session_timeout_s=300)
        (record,) = measure_candidates([Candidate(SMALL[0], "direct_nhwc")], BOARD_TARGET, runner,
                                       MeasurementStore(tmp_path / "m.jsonl"), show_progress=False)
        assert record.ok and record.board == f"127.0.0.1:{board.port}"
    finally:
        board.kill(9)
