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
    from tvm_dse.core_model import profile_library
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
    cycles, instructions = {}, {}
    for name, built in (("default", tvm_dse.build_baseline(model, target)),
                        ("spatial pack", build_plan(model, plan, target, graph))):
        profile = profile_library(built.export(tmp_path / f"{name}.so"), [shape], ["float32"])
        instructions[name] = profile.instructions
        cycles[name] = modeled_cycles(profile, "aarch64-linux-gnu", "cortex-a72", ["+neon"])
        # the convolution's multiply-adds ran in the library's own functions, each block named after one
        assert all(block.function for block in profile.blocks)
    assert cycles["spatial pack"] * 4 < cycles["default"]
    # the default build runs at least one scalar instruction per multiply-add; the scheduled one 4 per vector
    assert instructions["default"] > 16 * 16 * 9 * 14 * 14
    assert instructions["spatial pack"] < instructions["default"] / 4


def test_without_the_profiler_set_up_the_error_says_how_to_set_it_up(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_DSE_PROFILER_DIR", str(tmp_path))
    with pytest.raises(ProfilerError, match="scripts/setup_board.sh"):
        profile_command(["qemu-aarch64", "/bin/true"])
