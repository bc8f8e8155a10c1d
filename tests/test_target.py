"""Target parsing: legacy strings, presets, dicts and tvm Targets in; facts and clear errors out."""

import pytest
import tvm

from tvm_dse.errors import TargetError
from tvm_dse.target import PRESETS, DseTarget, parse_target, preset_names


def test_legacy_string_with_every_common_option():
    target = parse_target("llvm -mtriple=aarch64-linux-gnu -mattr=+neon -mcpu=cortex-a72 -num-cores=4")
    assert target.is_aarch64 and not target.is_x86
    assert target.mcpu == "cortex-a72"
    assert target.mattr == ("+neon",)
    assert target.num_cores == 4
    assert target.vector_bits == 128
    assert target.family == "arm-neon"
    assert not target.has_dotprod and not target.has_fp16
    assert not target.runs_on_host
    assert "arm_cpu" in [str(k) for k in target.tvm_target.keys]


@pytest.mark.parametrize("text", ["llvm -mtriple=aarch64", "llvm -mtriple aarch64", "llvm  -mtriple=aarch64-linux-gnu"])
def test_short_and_spaced_aarch64_triples(text):
    target = parse_target(text)
    assert target.triple == "aarch64-linux-gnu"
    assert target.is_aarch64 and target.vector_bits == 128


def test_plain_llvm_is_the_generic_cpu_of_the_host_architecture():
    target = parse_target("llvm")
    assert target.mcpu is None
    assert target.runs_on_host
    assert target.vector_bits == 128  # baseline SIMD only: "host" is the way to get this machine's CPU


def test_dotprod_and_fp16_attributes_are_reported():
    target = parse_target("llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a55 -mattr=+neon,+dotprod,+fullfp16")
    assert target.mattr == ("+neon", "+dotprod", "+fullfp16")
    assert target.has_dotprod and target.has_fp16


def test_x86_vector_width_follows_the_cpu():
    assert parse_target("llvm -mcpu=skylake-avx512").vector_bits == 512
    assert parse_target("llvm -mcpu=haswell").vector_bits == 256
    assert parse_target("llvm -mcpu=skylake-avx512").family == "x86-avx512"
    assert parse_target("llvm -mcpu=cascadelake").has_dotprod  # AVX-512 VNNI
    assert not parse_target("llvm -mcpu=haswell").has_dotprod


def test_boolean_flag_without_value():
    target = parse_target("llvm -mcpu=haswell -fast-math")
    assert target.options["fast-math"] is True


def test_host_preset_is_this_machine():
    host = parse_target("host")
    assert host.runs_on_host
    assert host.mcpu == tvm.target.codegen.llvm_get_system_cpu()
    assert host.num_cores >= 1
    assert host.preset == "host"


@pytest.mark.parametrize("name", ["rpi4", "rpi3", "rpi5", "cortex-a72", "cortex-a53", "cortex-a76", "cortex-a55",
                                  "raspberry-pi-4"])
def test_board_presets(name):
    target = parse_target(name)
    assert target.is_aarch64
    assert target.num_cores == 4
    assert target.mcpu.startswith("cortex-a")
    assert "+neon" in target.mattr


def test_preset_facts():
    assert parse_target("rpi4").mcpu == "cortex-a72"
    assert parse_target("rpi3").mcpu == "cortex-a53"
    assert parse_target("cortex-a76").has_dotprod and parse_target("cortex-a76").has_fp16
    assert parse_target("cortex-a55").has_dotprod
    assert not parse_target("rpi4").has_dotprod


def test_preset_in_a_dict_with_overrides():
    target = parse_target({"preset": "rpi4", "num-cores": 2})
    assert target.mcpu == "cortex-a72" and target.num_cores == 2
    assert target.preset == "rpi4"


@pytest.mark.parametrize("spec", ["host", "rpi4", "cortex-a55", "llvm", "llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a53",
                                  "llvm -mcpu=haswell -num-cores=8"])
def test_round_trips(spec):
    target = parse_target(spec)
    assert parse_target(target.to_dict()) == target
    assert parse_target(target.tvm_target) == target
    assert parse_target(target) is target
    assert parse_target(target.to_dict()).key == target.key


def test_dict_forms():
    from_dict = parse_target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                              "mattr": ["+neon"], "num-cores": 4})
    assert from_dict == parse_target("llvm -mtriple=aarch64-linux-gnu -mattr=+neon -mcpu=cortex-a72 -num-cores=4")
    assert parse_target({"kind": "llvm", "num_cores": 3}).num_cores == 3  # underscores accepted


def test_keys_name_the_target_stably():
    assert parse_target("rpi4").key == "llvm_aarch64_cortex-a72_+neon_4c"
    assert parse_target("rpi4").key != parse_target("rpi3").key
    assert parse_target("llvm -mtriple=aarch64-linux-gnu -mattr=+b,+a").key == \
        parse_target("llvm -mtriple=aarch64-linux-gnu -mattr=+a,+b").key


@pytest.mark.parametrize("spec, named, listed", [
    ("llvm -foo=1", "'foo'", "mcpu"),
    ({"kind": "llvm", "bogus": 1}, "'bogus'", "mtriple"),
    ("rpi9", "'rpi9'", "rpi4"),
    ("cuda -arch=sm_80", "'cuda'", "llvm"),
    ({"kind": "cuda"}, "'cuda'", "llvm"),
    ("llvm -mcpu=notacpu", "'notacpu'", "skylake"),
    ("llvm -mtriple=aarch64-linux-gnu -mcpu=notacpu", "'notacpu'", "cortex-a72"),
    ("llvm -num-cores=many", "'many'", "integer"),
    ("llvm mcpu=x", "'mcpu=x'", "-name=value"),
    ("llvm -mattr=neon", "'neon'", "'+'"),
    ("", "empty", "host"),
    (42, "int", "preset"),
])
def test_bad_targets_name_the_problem_and_what_is_accepted(spec, named, listed):
    with pytest.raises(TargetError) as raised:
        parse_target(spec)
    message = str(raised.value)
    assert named in message and listed in message


def test_preset_names_cover_presets():
    names = preset_names()
    assert names[0] == "host"
    assert set(PRESETS) <= set(names)
    assert isinstance(parse_target(names[-1]), DseTarget)
