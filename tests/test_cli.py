"""The tvm-dse command line: the demo job, graph, target and zoo commands, and its errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import pytest

from tvm_dse.cli import main


def test_baseline_on_a_zoo_model_checks_against_onnxruntime(tmp_path, capsys):
    report_path = tmp_path / "baseline.json"
    assert main(["baseline", "zoo:squeezenet1_1-small", "--repeat", "2", "--json", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "DSE graph of squeezenet1_1-small: 26 tunable nodes, 8 joins" in printed
    assert "outputs vs onnxruntime: relative error" in printed and "(ok," in printed
    report = json.loads(report_path.read_text())
    assert report["relative_error_vs_onnxruntime"] <= 1e-4
    assert report["latency"]["repeats"] == 2 and report["latency"]["median_ms"] > 0
    assert report["target"]["preset"] == "host"


def test_baseline_for_a_board_exports_instead_of_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no cross compiler: the error must say which one is missing
    status = main(["baseline", "zoo:squeezenet1_1-small", "--target", "rpi4", "--out", str(tmp_path)])
    assert status == 2
    assert "aarch64-linux-gnu-gcc" in capsys.readouterr().err


def test_graph_command_writes_json(tmp_path, capsys):
    path = tmp_path / "g.json"
    assert main(["graph", "zoo:resnet18-small", "--json", str(path)]) == 0
    assert "21 tunable nodes, 8 joins" in capsys.readouterr().out
    assert len(json.loads(path.read_text())["vertices"]) > 21


def test_target_command(capsys):
    assert main(["target", "llvm -mtriple=aarch64-linux-gnu -mattr=+neon -mcpu=cortex-a72 -num-cores=4"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["key"] == "llvm_aarch64_cortex-a72_+neon_4c" and facts["vector_bits"] == 128
    assert main(["target", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "rpi4" in listed and "Cortex-A72" in listed


def test_zoo_export(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["zoo", "export", "mobilenet_v2-small", "-o", str(path)]) == 0
    onnx.checker.check_model(onnx.load(path))
    assert main(["zoo", "list"]) == 0
    assert "zoo:resnet50" in capsys.readouterr().out


@pytest.mark.faults
def test_errors_go_to_stderr_with_status_2(capsys):
    assert main(["target", "llvm -nope=1"]) == 2
    assert "unknown target option 'nope'" in capsys.readouterr().err
    assert main(["graph", "missing.onnx"]) == 2
    assert "model file not found: missing.onnx" in capsys.readouterr().err
    assert main(["baseline", "zoo:squeezenet1_1-small", "--shape", "input=1,3,x"]) == 2
    assert "--shape 'input=1,3,x'" in capsys.readouterr().err
    assert main(["optimize", "missing.onnx", "--kernel-repeat", "0", "--no-retry-failed"]) == 2
    assert "kernel timing setting repeat must be a whole number of at least 1; got 0" in capsys.readouterr().err
    assert main(["optimize", "zoo:squeezenet1_1-small", "--target", "host", "--cost-model"]) == 2
    said = capsys.readouterr()
    assert "every cost modeled" in said.out and "the cost model prices aarch64 cores" in said.err


@pytest.mark.faults
def test_a_model_tvm_dse_cannot_optimize_is_refused_before_any_work(tmp_path, capsys):
    weight = onnx.numpy_helper.from_array(np.ones((4, 3, 3), np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="conv1d")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 14])], [weight])
    path = tmp_path / "conv1d.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    logs = tmp_path / "logs"
    assert main(["optimize", str(path), "--logs", str(logs), "--cold", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "error: model 'conv1d' has no node tvm_dse chooses an implementation for" in error
    assert "node 'conv1d', a 1-D convolution" in error and "Traceback" not in error
    assert not list(logs.rglob("*.jsonl"))


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("tvm-dse")
    result = subprocess.run([str(script), "target", "rpi3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["key"] == "llvm_aarch64_cortex-a53_+neon_4c"


@pytest.mark.faults
def test_build_command_builds_exports_and_checks_a_saved_plan(tmp_path, capsys):
    from tvm_dse import build_graph, load_model
    from tvm_dse.plan import Plan
    from tvm_dse.strategies.candidate import default_decisions
    from tvm_dse.target import parse_target

    model = load_model("zoo:resnet18-small")
    plan_path = Plan.uniform(model, build_graph(model), "host", "spatial_pack_nchwc").save(tmp_path / "plan.json")
    library = tmp_path / "r18.so"
    assert main(["build", "zoo:resnet18-small", "--plan", str(plan_path), "-o", str(library), "--repeat", "2"]) == 0
    printed = capsys.readouterr().out
    assert library.stat().st_size > 0 and f"exported {library}" in printed
    assert "outputs vs onnxruntime: relative error" in printed and "(ok," in printed
    # a plan for another model is refused, naming both models
    assert main(["build", "zoo:squeezenet1_1-small", "--plan", str(plan_path)]) == 2
    error = capsys.readouterr().err
    assert "resnet18-small" in error and "squeezenet1_1-small" in error
    # bad decisions are refused naming the node, the strategy and the decision
    data = json.loads(plan_path.read_text())
    node = next(name for name, choice in data["nodes"].items() if choice["strategy"] == "spatial_pack_nchwc")
    workload = next(v.workload for v in build_graph(model).nodes if v.name == node)
    defaults = default_decisions("spatial_pack_nchwc", workload, parse_target("host"))
    outer, inner = defaults["oc_blocks"]
    for decisions, message in (({"oc_blocks": [outer, inner, 1]}, "does not split a loop"),
                               ({"oc_blocks": [-outer, -inner]}, "into 2 positive factors"),
                               ({**defaults, "unroll": 4}, "unknown decision(s) 'unroll'"),
                               ({"oc_blocks": "wide"}, "is not a list of 2 whole numbers")):
        data["nodes"][node]["decisions"] = decisions
        plan_path.write_text(json.dumps(data))
        assert main(["build", "zoo:resnet18-small", "--plan", str(plan_path), "-o", str(library)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: node {node!r} (spatial_pack_nchwc): "), error
        assert message in error and "Traceback" not in error
    plan_path.write_text(json.dumps({**data, "nodes": []}))
    assert main(["build", "zoo:resnet18-small", "--plan", str(plan_path)]) == 2
    assert "malformed plan: nodes must map each tunable node to its choice; got []" in capsys.readouterr().err


@pytest.mark.faults
@pytest.mark.parametrize("moment", ["building", "measuring"])
def test_ctrl_c_stops_at_once_keeps_the_measurements_and_says_how_to_go_on(moment, tmp_path):
    """Ctrl-C at a terminal interrupts the whole process group: tvm-dse and its builder workers."""
    store = tmp_path / "logs"
    command = [sys.executable, "-m", "tvm_dse.cli", "optimize", "zoo:squeezenet1_1-small", "--logs", str(store),
               "--cold", "--out", str(tmp_path / "out")]
    # as a foreground job at a terminal: Ctrl-C not ignored, whatever this test runner inherited (a shell
    # without job control starts its background jobs with SIGINT ignored, and exec passes that on)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300

    def recorded() -> int:
        return sum(len(path.read_text().splitlines()) for path in store.rglob("*.jsonl"))

    workers = []
    while time.monotonic() < deadline and process.poll() is None:
        workers = subprocess.run(["pgrep", "-g", str(process.pid), "-f", "popen_worker"], capture_output=True,
                                 text=True).stdout.split()
        if (moment == "building" and workers and recorded() == 0) or (moment == "measuring" and recorded() >= 2):
            break
        time.sleep(0.1)
    assert process.poll() is None, "the run ended before it could be interrupted"
    kept_before = recorded()
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        group = subprocess.run(["ps", "-o", "pid,stat,etime,args", "-s", str(process.pid)], capture_output=True,
                               text=True).stdout
        os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
        raise AssertionError(f"tvm-dse did not stop within 20 s of Ctrl-C; its processes:\n{group}\nits stderr "
                             f"ends:\n{err[-3000:]}")
    assert process.returncode == 130
    assert "Traceback" not in err and "interrupted: what was measured is kept in the tuning logs" in err
    assert recorded() >= kept_before  # nothing lost
    if moment == "building":
        assert workers
    for _ in range(50):  # no process of the run's group is left (the builder's workers included)
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("a process of the interrupted run is still alive")
