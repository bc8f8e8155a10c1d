"""The cost model's parts on their own: the execution profiler (QEMU's user-mode emulation with the
project's plugin) counts exactly, and llvm-mca's cycles follow what a core's pipelines allow."""

import subprocess

import pytest

from tvm_dse.core_model import ProfilerError, block_cycles, modeled_cycles, profile_command

# x0 counts down from ITERATIONS; each iteration runs the same three instructions; then exit(0)
LOOP = """
    .global _start
    .text
_start:
    mov x0, #{iterations}
    mov x1, #0
1:
    add x1, x1, #3
    subs x0, x0, #1
    b.ne 1b
    mov x0, #0
    mov x8, #93
    svc #0
"""
DEPENDENT_FMLAS = "fmla v0.4s, v1.4s, v2.4s\n" * 4
INDEPENDENT_FMLAS = "".join(f"fmla v{register}.4s, v1.4s, v2.4s\n" for register in (0, 3, 4, 5))


def _aarch64_program(tmp_path, name: str, source: str):
    (tmp_path / f"{name}.S").write_text(source)
    subprocess.run(["aarch64-linux-gnu-gcc", "-nostdlib", "-static", "-o", str(tmp_path / name),
                    str(tmp_path / f"{name}.S")], check=True)
    return tmp_path / name


def _machine_code(tmp_path, assembly: str) -> bytes:
    (tmp_path / "block.S").write_text(assembly)
    subprocess.run(["aarch64-linux-gnu-as", "-o", str(tmp_path / "block.o"), str(tmp_path / "block.S")], check=True)
    subprocess.run(["aarch64-linux-gnu-objcopy", "-O", "binary", "--only-section=.text", str(tmp_path / "block.o"),
                    str(tmp_path / "block.bin")], check=True)
    return (tmp_path / "block.bin").read_bytes()


@pytest.mark.parametrize("iterations", [1, 1000, 54321])
def test_the_profiler_counts_every_instruction_of_a_loop_exactly(tmp_path, iterations):
    program = _aarch64_program(tmp_path, "loop", LOOP.format(iterations=iterations))
    profile = profile_command(["qemu-aarch64", str(program)])
    assert profile.instructions == 2 + 3 * iterations + 3
    # the loop's branch back is taken iterations - 1 times: its block runs that often (the first iteration
    # is part of the block that starts the program)
    loop_block = [block for block in profile.blocks if block.instructions == 3 and block.code[-4:] == bytes.fromhex("c1ffff54")]
    assert [block.executions for block in loop_block] == ([iterations - 1] if iterations > 1 else [])


def test_a_failing_program_is_an_error_naming_it(tmp_path):
    program = _aarch64_program(tmp_path, "fails", LOOP.format(iterations=1).replace("mov x0, #0", "mov x0, #3"))
    with pytest.raises(ProfilerError, match="fails.*exit 3"):
        profile_command(["qemu-aarch64", str(program)])


@pytest.mark.parametrize("core", ["cortex-a53", "cortex-a55", "cortex-a72", "cortex-a76"])
def test_a_chain_of_dependent_multiply_adds_costs_more_cycles_than_independent_ones(tmp_path, core):
    dependent, independent = block_cycles([_machine_code(tmp_path, DEPENDENT_FMLAS),
                                           _machine_code(tmp_path, INDEPENDENT_FMLAS)],
                                          "aarch64-linux-gnu", core, ["+neon"])
    # each fmla of the chain waits for the one before (its latency); the independent ones issue back to back
    assert 0 < independent < dependent / 1.5


def test_modeled_cycles_weigh_each_block_by_its_executions(tmp_path):
    program = _aarch64_program(tmp_path, "loop", LOOP.format(iterations=5000))
    profile = profile_command(["qemu-aarch64", str(program)])
    per_block = block_cycles([block.code for block in profile.blocks], "aarch64-linux-gnu", "cortex-a72")
    cycles = modeled_cycles(profile, "aarch64-linux-gnu", "cortex-a72")
    assert cycles == pytest.approx(sum(b.executions * c for b, c in zip(profile.blocks, per_block)))
    # the loop dominates: at least one cycle per iteration, and at most its three instructions' latencies
    assert 4999 <= cycles <= 3 * 5000 * 4


@pytest.mark.sweep
def test_the_model_prices_an_unscheduled_convolution_far_above_a_scheduled_one(tmp_path):
    """TVM's default build of a 3x3 convolution (naive loops, scalar code) against tvm_dse's spatial-pack
    plan of it, both cross-compiled for a Cortex-A72 and profiled on the emulated board."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    import tvm_dse
    from tvm_dse.core_model import LibraryRun, profile_libraries
    from tvm_dse.lower import build_plan

    shape = [1, 16, 14, 14]
    weights = numpy_helper.from_array(np.random.default_rng(0).uniform(-1, 1, (16, 16, 3, 3)).astype(np.float32), "w")
    graph_proto = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [weights])
    model = tvm_dse.load_model(helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 13)]), name="conv")
    graph = tvm_dse.build_graph(model)
    target = tvm_dse.parse_target("cortex-a72")
    plan = tvm_dse.Plan.uniform(model, graph, target, "spatial_pack_nchwc")
    feed = model.random_feed(seed=0)
    built = {"default": tvm_dse.build_baseline(model, target), "spatial pack": build_plan(model, plan, target, graph)}
    runs = [LibraryRun(module.export(tmp_path / f"{index}.so"), feed=feed) for index, module in enumerate(built.values())]
    expected = tvm_dse.build_baseline(model, "host").run(feed)[0]
    cycles, instructions = {}, {}
    for name, run in zip(built, profile_libraries(runs)):
        instructions[name] = run.profile.instructions
        cycles[name] = modeled_cycles(run.profile, "aarch64-linux-gnu", "cortex-a72", ["+neon"])
        # the convolution's multiply-adds ran in the library's own functions, each block named after one
        assert all(block.function for block in run.profile.blocks)
        # what ran on the emulated board computed the convolution
        assert np.allclose(run.outputs[0], expected, rtol=1e-4, atol=1e-4)
    assert cycles["spatial pack"] * 4 < cycles["default"]
    # the default build runs at least one scalar instruction per multiply-add; the scheduled one 4 per vector
    assert instructions["default"] > 16 * 16 * 9 * 14 * 14
    assert instructions["spatial pack"] < instructions["default"] / 4


def test_a_function_is_priced_per_call_and_waits_on_memory_only_beyond_the_cache():
    from tvm_dse.core_model import Core, function_costs

    core = Core("cortex-a72", "aarch64-linux-gnu", ("+neon",), clock_ghz=2.0, cores=2, bandwidth_gbs=4.0, cache_mb=1.0)
    costs = function_costs({"conv": 8e6, "pool": 1e3, "_init": 20.0},
                           {"conv": (2, 2 * 2**19), "pool": (1, 8 * 2**20), "vm.builtin.alloc_tensor": (3, 0)}, core)
    # per call: half the cycles over 2 GHz and two cores; half a MB fits in the cache
    assert costs["conv"] == (pytest.approx(4e6 / 2e6 / 2), 2)
    # 8 MB do not: they stream at 4 GB/s, longer than the compute
    assert costs["pool"] == (pytest.approx(8 * 2**20 / 4e6), 1)
    # priced: what the virtual machine called and ran in the library; not the runtime's own functions, nor
    # the library's code that no call ran (its loading)
    assert set(costs) == {"conv", "pool"}


def test_a_module_is_priced_function_by_function_as_its_virtual_machine_calls_them(tmp_path):
    import tvm_dse
    from tvm_dse.core_model import ModeledRunner
    from tvm_dse.lower import build_plan
    from tvm_dse.output_fusion import CONVERSION_FUNC_PREFIX
    from tvm_dse.profiling import ModuleProfile
    from tvm_dse.testing.matrix import matrix_model

    target = tvm_dse.parse_target("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72 -mattr=+neon")
    model = tvm_dse.load_model(matrix_model("concat_2_6"))
    graph = tvm_dse.build_graph(model)
    built = build_plan(model, tvm_dse.Plan.uniform(model, graph, target, "spatial_pack_nchwc"), target, graph)
    [functions] = ModeledRunner(target).price_functions([(built, model.random_feed(seed=0))], tmp_path)
    # named as the module names them (a function's wrapper and body are one), each called once and priced
    assert all(not name.startswith("__tvm_ffi_") and not name.endswith("_compute_") for name in functions)
    assert all(ms > 0 and calls == 1 for ms, calls in functions.values())
    # every tunable node's kernel, and the conversions around the spatial-pack layout, priced in the module
    profile = ModuleProfile.modeled(functions)
    assert sorted(vertex_id for vertex_id, _, _ in profile.kernel_calls()) == sorted(node.id for node in graph.nodes)
    assert any(name.startswith(CONVERSION_FUNC_PREFIX) for name in functions)
    assert profile.total_ms == pytest.approx(sum(ms for ms, _ in functions.values()))


def test_without_the_profiler_set_up_the_error_says_how_to_set_it_up(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_DSE_PROFILER_DIR", str(tmp_path))
    with pytest.raises(ProfilerError, match="scripts/setup_board.sh"):
        profile_command(["qemu-aarch64", "/bin/true"])


@pytest.mark.sweep
@pytest.mark.parametrize("target, core", [("llvm -mtriple=aarch64 -mcpu=cortex-a72 -mattr=+neon", "cortex-a72"),
                                          ("llvm -mtriple=aarch64 -mcpu=cortex-a55 -mattr=+neon", "cortex-a55"),
                                          ("llvm -mtriple=aarch64-linux-gnu", "cortex-a72")])  # the design card's call
def test_optimize_for_an_aarch64_core_without_a_board_prices_everything_with_the_model(tmp_path, target, core):
    import tvm_dse
    from tvm_dse.core_model import MODELED_LOGS
    from tvm_dse.testing.matrix import matrix_model
    from tvm_dse.tuning import TuningLogs

    logs = tmp_path / "logs"
    result = tvm_dse.optimize(matrix_model("concat_2_6"), target=target, logs=logs, out_dir=tmp_path / "out", verify=1)
    report = result.report
    assert report["costs"]["source"] == "model" and core in report["costs"]["core"]
    assert result.plan.provenance["costs"] == report["costs"]
    page = (tmp_path / "out" / "report.md").read_text()
    first_line = page.splitlines()[2]
    assert first_line.startswith("- Costs: every cost is MODELED for") and "not measured" in first_line
    # the library carries tvm_dse's thread pool, which timed nothing here
    (pool,) = [line for line in page.splitlines() if line.startswith("- Thread pool: ")]
    assert "in the exported library" in pool and "measured" not in pool
    assert report["latency"]["median_ms"] > 0 and report["predicted_ms"] > 0
    # the space priced from its uniform plans' modules, every operator of them modeled: the prediction is
    # the chosen module's modeled latency but for the conversions, priced as standalone passes
    assert report["priced_in_model"]["modules"] >= 1
    assert report["predicted_ms"] == pytest.approx(report["latency"]["median_ms"], rel=0.1)
    # the exported library ran on the emulated board and matched TVM's default build on this machine
    assert report["validation"]["relative_error_vs_tvm_default"] < 1e-4
    assert (tmp_path / "out" / "concat_2_6.aarch64.so").is_file()
    # modeled records are kept apart from measurements, and a second run reuses them
    assert TuningLogs(logs).stores() == []
    modeled = TuningLogs(logs / MODELED_LOGS).stores()
    assert [store.target_key for store in modeled] == [report["target_key"]]
    held = len(modeled[0].records())
    again = tvm_dse.optimize(matrix_model("concat_2_6"), target=target, logs=logs, verify=1)
    assert len(modeled[0].records()) == held
    assert again.report["predicted_ms"] == pytest.approx(report["predicted_ms"])


def test_an_aarch64_target_that_names_no_core_is_modeled_as_the_default_board_and_says_so():
    from tvm_dse.core_model import Core
    from tvm_dse.core_model.cost import GENERIC_AARCH64_PRESET
    from tvm_dse.target import PRESETS, parse_target

    board = PRESETS[GENERIC_AARCH64_PRESET]
    core = Core.of(parse_target("llvm -mtriple=aarch64-linux-gnu"))
    assert (core.mcpu, core.cores) == (board.options["mcpu"], board.options["num-cores"])
    assert core.clock_ghz == board.clock_ghz
    assert "names no core" in core.describe() and board.description in core.describe()
    named = Core.of(parse_target(GENERIC_AARCH64_PRESET))
    assert named.assumed == "" and core.describe().startswith(named.describe())


def test_the_cost_model_refuses_a_core_it_cannot_price_before_any_work(tmp_path):
    import tvm_dse
    from tvm_dse.errors import TargetError
    from tvm_dse.testing.matrix import matrix_model

    with pytest.raises(TargetError, match="prices aarch64 cores"):
        tvm_dse.optimize(matrix_model("concat_2_6"), target="host", cost_model=True, logs=tmp_path)


@pytest.mark.sweep
def test_host_code_is_profiled_under_x86_emulation_for_the_validation(tmp_path):
    """The validation's path: a kernel built for an AVX2 target, profiled under qemu-x86_64 and priced for
    a core llvm-mca knows, its outputs those of the same model built for this machine."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    import tvm_dse
    from tvm_dse.core_model import LibraryRun, profile_libraries

    shape = [1, 8, 8, 8]
    weights = numpy_helper.from_array(np.ones((8, 8, 1, 1), np.float32), "w")
    graph_proto = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "conv",
                                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [weights])
    model = tvm_dse.load_model(helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 13)]), name="conv")
    target = tvm_dse.parse_target("llvm -mcpu=haswell -num-cores=1")
    feed = model.random_feed(seed=0)
    library = tvm_dse.build_baseline(model, target).export(tmp_path / "conv.so")
    run = profile_libraries([LibraryRun(library, feed=feed)], "x86_64")[0]
    assert np.allclose(run.outputs[0], tvm_dse.build_baseline(model, "host").run(feed)[0], rtol=1e-5, atol=1e-5)
    # at least one instruction per 8 multiply-adds (AVX2's fp32 lanes)
    assert run.profile.instructions > 8 * 8 * 8 * 8 // 8
    assert modeled_cycles(run.profile, target.triple, "haswell") > 0
