"""optimize() end to end on the host and on the emulated board, the optimize command, the tutorials."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvm_dse import optimize
from tvm_dse.cli import main
from tvm_dse.plan import Plan
from tvm_dse.testing import onnxruntime_outputs, relative_error

pytest_plugins = ["tvm_dse.testing.pytest_plugin"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One measurement store for the module: later tests resume from what earlier ones measured."""
    return tmp_path_factory.mktemp("store") / "measurements.jsonl"


def test_optimize_on_the_host_matches_onnxruntime_and_writes_everything(store, tmp_path):
    result = optimize("zoo:resnet18-small", "host", out_dir=tmp_path, store=store, show_progress=False)
    feed = result.model.random_feed(seed=5)
    (output,) = result.run(feed)
    (reference,) = onnxruntime_outputs(result.model.onnx_model, feed)
    assert relative_error(output, reference) <= 1e-4
    for name in ("plan.json", "report.md", "report.json", "layers.png", "convergence.png", "pareto.png",
                 "space.json", "resnet18-small.x86_64.so"):
        assert (tmp_path / name).is_file(), name
    plan = Plan.load(tmp_path / "plan.json")
    plan.validate(result.model, result.graph, "host")
    assert plan.metrics["measured_ms"] > 0 and plan.provenance["searcher"] == "qlearning"
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["searcher"]: row for row in report["comparison"]}
    assert rows["exact"]["gap_percent"] == 0.0
    # at equal budget Q-learning beats random search; its 2% promise is checked on the synthetic spaces
    assert rows["qlearning"]["cost_ms"] <= rows["random"]["cost_ms"]
    assert rows["greedy"]["cost_ms"] >= rows["exact"]["cost_ms"]
    assert len(report["nodes"]) == 21 and report["pareto_front"]


def test_memory_bound_is_respected(store, tmp_path):
    free = optimize("zoo:squeezenet1_1-small", searcher="exact", store=store, show_progress=False,
                    compare_searchers=())
    smallest = min(p["peak_memory_mb"] for p in free.report["pareto_front"])
    limit = (smallest + free.report["peak_memory_mb"]) / 2
    bounded = optimize("zoo:squeezenet1_1-small", searcher="exact", memory_limit=limit, store=store,
                       show_progress=False, compare_searchers=())
    assert bounded.report["peak_memory_mb"] <= limit
    assert bounded.report["predicted_ms"] >= free.report["predicted_ms"] - 1e-9


def test_a_board_target_needs_rpc(store):
    from tvm_dse import TvmDseError

    with pytest.raises(TvmDseError, match="does not run on this machine: give rpc="):
        optimize("zoo:squeezenet1_1-small", "rpi4", store=store, show_progress=False)


def test_the_optimize_command(store, tmp_path, capsys):
    assert main(["optimize", "zoo:vgg16-small", "--out", str(tmp_path), "--store", str(store),
                 "--searcher", "exact"]) == 0
    printed = capsys.readouterr().out
    assert "outputs match TVM's default build" in printed and "exact" in printed
    assert (tmp_path / "plan.json").is_file() and (tmp_path / "pareto.png").is_file()
    assert main(["optimize", "zoo:vgg16-small", "--tracker", "127.0.0.1:1"]) == 2
    assert "--tracker needs --key" in capsys.readouterr().err


def _run_tutorial(store, name, *args, timeout=900):
    environment = {**os.environ, "TVM_DSE_STORE": str(store)}  # resume from the module's measurements
    completed = subprocess.run([sys.executable, str(ROOT / "tutorials" / name), *map(str, args)],
                               capture_output=True, text=True, timeout=timeout, env=environment)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return completed.stdout


def test_tutorial_optimize_on_host(store, tmp_path):
    printed = _run_tutorial(store, "optimize_on_host.py", "zoo:mobilenet_v2-small", tmp_path)
    assert "the exported library gives the same outputs" in printed


def test_tutorial_memory_bounded(store, tmp_path):
    printed = _run_tutorial(store, "memory_bounded.py", "zoo:squeezenet1_1-small", tmp_path)
    assert "latency/memory Pareto front" in printed and "bound" in printed


def test_tutorial_optimize_for_a_board(emulated_boards, store, tmp_path):
    """optimize() for rpi4 through the tracker: kernels measured on the boards, the plan validated there."""
    printed = _run_tutorial(store, "optimize_for_a_board.py", "zoo:squeezenet1_1-small", tmp_path,
                            emulated_boards.tracker_address, emulated_boards.key)
    assert "outputs match TVM's default build" in printed
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["target"]["key"].startswith("llvm_aarch64_cortex-a72")
    assert plan["metrics"]["measured_on"].startswith("127.0.0.1:")  # validated and timed on a board
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["validation"]["relative_error_vs_tvm_default"] <= 1e-4
    library = tmp_path / "squeezenet1_1-small.aarch64.so"
    assert int.from_bytes(library.read_bytes()[18:20], "little") == 183  # an aarch64 ELF
