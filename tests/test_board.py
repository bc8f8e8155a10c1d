"""The emulated aarch64 board: cross-compiled kernels run through the tracker; the board command."""

import numpy as np
import pytest
import tvm
from tvm import rpc

from tvm_dse.cli import main
from tvm_dse.layouts import Layout
from tvm_dse.strategies import build_kernel
from tvm_dse.testing import relative_error
from tvm_dse.testing.board import free_port, load_cluster
from tvm_dse.testing.conformance import CASES, FP32_BOUND, random_operands, reference_output

pytest_plugins = ["tvm_dse.testing.pytest_plugin"]


@pytest.mark.parametrize("strategy, case_id", [("spatial_pack_nchwc", "3x3_s1_batch2"), ("direct_nhwc", "7x7_s2_rgb"),
                                               ("direct_nchw", "3x3_s3_asym_pad")])
def test_cross_compiled_strategy_matches_on_the_board(emulated_boards, tmp_path, strategy, case_id):
    case = next(c for c in CASES if c.id == case_id)
    built = build_kernel(strategy, case.workload, "rpi4", case.epilogue)
    library = built.export(tmp_path / "kernel.so")
    remote = rpc.connect_tracker("127.0.0.1", emulated_boards.tracker_port).request(emulated_boards.key,
                                                                                      session_timeout=120)
    remote.upload(str(library))
    module = remote.load_module(library.name)
    device = remote.cpu(0)
    operands = random_operands(case.workload, case.epilogue)
    arguments = [tvm.runtime.tensor(a.numpy(), device) for a in built.arguments(**operands)]
    module["main"](*arguments)
    output = Layout.parse(built.strategy.layouts(case.workload, built.target).output).to_nchw(arguments[-1].numpy())
    expected = reference_output(**operands, workload=case.workload, epilogue=case.epilogue)
    assert relative_error(output, expected) <= FP32_BOUND
    assert np.abs(expected).max() > 0


def test_board_command_up_status_down(capsys):
    port = free_port()
    assert main(["board", "up", "--boards", "1", "--tracker-port", str(port), "--key", "cli-test"]) == 0
    cluster = load_cluster()
    try:
        assert cluster.tracker_port == port and cluster.key == "cli-test"
        assert main(["board", "status"]) == 0
        assert "1 registered as 'cli-test'" in capsys.readouterr().out
        assert main(["board", "up", "--tracker-port", str(port)]) == 2
        assert "already up" in capsys.readouterr().err
    finally:
        assert main(["board", "down"]) == 0
    assert not cluster.tracker.alive() and not any(b.alive() for b in cluster.boards)
    assert load_cluster() is None
