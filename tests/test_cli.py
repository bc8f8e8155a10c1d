"""The tvm-dse command line: the demo job, graph, target and zoo commands, and its errors."""

import json
import subprocess
import sys
from pathlib import Path

import onnx

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


def test_errors_go_to_stderr_with_status_2(capsys):
    assert main(["target", "llvm -nope=1"]) == 2
    assert "unknown target option 'nope'" in capsys.readouterr().err
    assert main(["graph", "missing.onnx"]) == 2
    assert "model file not found: missing.onnx" in capsys.readouterr().err
    assert main(["baseline", "zoo:squeezenet1_1-small", "--shape", "input=1,3,x"]) == 2
    assert "--shape 'input=1,3,x'" in capsys.readouterr().err


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("tvm-dse")
    result = subprocess.run([str(script), "target", "rpi3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["key"] == "llvm_aarch64_cortex-a53_+neon_4c"


def test_build_command_builds_exports_and_checks_a_saved_plan(tmp_path, capsys):
    from tvm_dse import build_graph, load_model
    from tvm_dse.plan import Plan

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
