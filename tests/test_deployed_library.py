"""A plan's exported library holds the model's weights once, outside TVM's constant pool: they are ``main``'s
parameters after the inputs, stored in the library's read-only data and read back as arrays viewing the
loaded library, so a process running it holds them once at its peak (the constant pool held them four
times while loading); and it runs with TVM's runtime library alone, without TVM's Python package."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_dse
from tvm_dse.build import build_baseline
from tvm_dse.export import load_library, load_weights
from tvm_dse.frontend import load_model
from tvm_dse.graph import build_graph
from tvm_dse.deployed_library import ALIGNMENT
from tvm_dse.lower import build_plan
from tvm_dse.plan import Plan
from tvm_dse.process_memory import measure_process_memory
from tvm_dse.testing import onnxruntime_outputs, relative_error, single_conv_model
from tvm_dse.workload import Workload

# Winograd F(4,3) weights of this layer (37.7 MB) dwarf its activations (0.2 MB in and out)
_WIDE_LAYER = Workload("conv2d", 1, 512, 7, 7, 512, kernel=(3, 3), stride=(1, 1), padding=(1, 1, 1, 1),
                       dilation=(1, 1), groups=1)


@pytest.fixture(scope="module")
def wide_layer():
    model = load_model(single_conv_model(_WIDE_LAYER), name="wide_layer")
    graph = build_graph(model)
    built = build_plan(model, Plan.uniform(model, graph, "host", "winograd_f4_nchwc"), "host", graph)
    return model, built


def test_a_plans_transformed_weights_are_mains_parameters_after_the_inputs(wide_layer):
    model, built = wide_layer
    original = _WIDE_LAYER.out_channels * _WIDE_LAYER.in_channels * 9 * 4
    # F(4,3) transforms each 3x3 kernel into 6x6: the parameters hold the transformed weights, 4x the original
    assert sum(weight.numpy().nbytes for weight in built.weights) >= 4 * original
    feed = model.random_feed(seed=0)
    reference = onnxruntime_outputs(single_conv_model(_WIDE_LAYER), feed)[0]
    assert relative_error(built.run(feed)[0], reference) <= 1e-4


def test_a_runtime_only_process_holds_the_librarys_weights_once(wide_layer, tmp_path):
    model, built = wide_layer
    library = built.export(tmp_path / "wide_layer.so")
    weights_bytes = sum(weight.numpy().nbytes for weight in built.weights)
    assert library.stat().st_size < weights_bytes + 2**20  # in the file once
    memory = measure_process_memory(library, model.random_feed(seed=1))
    # loading, running and the activations add a few MB; the constant pool added the weights four times
    assert weights_bytes <= memory.plan_bytes <= 1.5 * weights_bytes, memory


def test_a_built_model_exports_once_and_copies_that_library_until_another_writes_it(wide_layer, tmp_path,
                                                                                     monkeypatch):
    from tvm_dse import build as build_module

    model, built = wide_layer
    exports = []

    def export_library(*arguments, **keywords):
        exports.append(arguments[2])
        return real(*arguments, **keywords)

    real = build_module.export_library
    monkeypatch.setattr(build_module, "export_library", export_library)
    fresh = build_module.BuiltModel(built.executable, built.target, built.inputs, built.weights)
    first = fresh.export(tmp_path / "memory" / "wide_layer.so")  # as a run exports to measure its memory
    output = fresh.export(tmp_path / "out" / "wide_layer.x86_64.so")  # and then as its output
    assert exports == [first] and output == tmp_path / "out" / "wide_layer.x86_64.so"
    assert output.read_bytes() == first.read_bytes() and os.access(output, os.X_OK)
    feed = model.random_feed(seed=4)
    ran = relax.VirtualMachine(load_library(output), tvm.cpu())["main"](tvm.runtime.tensor(feed["x"]),
                                                                        *load_weights(output))
    np.testing.assert_array_equal(ran.numpy(), built.run(feed)[0])
    # a board run exports every plan it times to one name: another model written there is never copied
    other = build_module.BuiltModel(built.executable, built.target, built.inputs, built.weights)
    other.export(first)
    assert fresh.export(tmp_path / "again.so").is_file() and exports == [first, first, tmp_path / "again.so"]
    (tmp_path / "again.so").unlink()  # gone: the next export builds again as well
    assert fresh.export(tmp_path / "out" / "again.so").is_file() and len(exports) == 4


def test_loaded_weights_view_the_mapped_library_aligned_and_a_library_without_any_runs_without(wide_layer, tmp_path,
                                                                                                 zoo):
    model, built = wide_layer
    library = built.export(tmp_path / "wide_layer.so")
    vm = relax.VirtualMachine(load_library(library), tvm.cpu())
    weights = load_weights(library)
    assert len(weights) == len(built.weights)
    with open("/proc/self/maps") as maps:
        mapped = [[int(address, 16) for address in line.split()[0].split("-")] for line in maps
                  if line.rstrip().endswith(os.path.realpath(library))]
    for weight in map(np.from_dlpack, weights):
        assert weight.ctypes.data % ALIGNMENT == 0
        assert any(start <= weight.ctypes.data and weight.ctypes.data + weight.nbytes <= end for start, end in mapped)
    feed = model.random_feed(seed=2)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(feed["x"]), *weights).numpy(), built.run(feed)[0])

    squeezenet = load_model(zoo("squeezenet1_1"))
    baseline = build_baseline(squeezenet)  # TVM's default build keeps its constants in the constant pool
    exported = baseline.export(tmp_path / "baseline.so")
    assert load_weights(exported) == []
    feed = squeezenet.random_feed()
    reloaded = relax.VirtualMachine(load_library(exported), tvm.cpu())["main"](tvm.runtime.tensor(feed["input"]))
    np.testing.assert_array_equal(reloaded.numpy(), baseline.run(feed)[0])


_RUN_WITHOUT_TVM = """
import sys
sys.modules["torch"] = None
import numpy as np
from deployed_library import DeployedLibrary
library, inputs, outputs = sys.argv[1:]
(result,) = DeployedLibrary(library)(*np.load(inputs).values())
assert "tvm" not in sys.modules, "TVM's Python package was imported"
np.save(outputs, result)
"""


def test_a_library_runs_with_tvms_runtime_library_alone(wide_layer, tmp_path):
    model, built = wide_layer
    library = built.export(tmp_path / "wide_layer.so")
    feed = model.random_feed(seed=3)
    np.savez(tmp_path / "inputs.npz", **feed)
    done = subprocess.run([sys.executable, "-c", _RUN_WITHOUT_TVM, str(library), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "outputs.npy")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(tvm_dse.__file__)})
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "outputs.npy"), built.run(feed)[0])
