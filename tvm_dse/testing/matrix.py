"""The target matrix: every family of CPU tvm_dse writes kernels for, the models each is checked on, the
plans each model is lowered under, and what a family's code must (and must not) contain.

A family is a target string standing for a kind of CPU: x86 with AVX2, with AVX-512, with AVX-512 VNNI;
aarch64 with NEON, with NEON and the dot product, with NEON and fp16 arithmetic. What a family offers
(vector lanes, the int8 dot product, fp16 arithmetic) is read from its parsed target, never written here,
so the checks hold for any lane count. A plan built for a family runs where that family's code can run:
on this machine (x86 families whose instructions it has, and ``host`` itself), on the emulated aarch64
board through the RPC tracker, or nowhere here: then its assembly is checked instead.

Models: the zoo's small variants and :mod:`tvm_dse.testing.awkward`'s models. Plans (:func:`matrix_plans`),
in three kinds: every uniform strategy; random valid plans in fp32; and where the family has int8 or fp16,
the uniform fp16 plan, a random plan over all its precisions and the most quantized plan.
:func:`plan_failures` builds them and checks each: its assembly against the family's facts, and its
outputs against onnxruntime where it runs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx

from ..build import BuiltModel
from ..frontend import Model
from ..graph import DseGraph
from ..layouts import Layout, native_layout
from ..lower import build_plan
from ..validation import QUANTIZED_VALIDATION_BOUND, VALIDATION_BOUND
from ..plan import Plan
from ..accuracy import Calibration, calibrate
from ..quant.intrinsics import dot_intrinsic
from ..accuracy.sensitivity import int8_plan
from ..strategies import applicable_strategies, get_strategy
from ..target import DseTarget, parse_target
from . import onnxruntime_outputs, relative_error
from .awkward import AWKWARD_NAMES, build_awkward_model
from .quantized_reference import quantized_reference_model
from ..zoo import MODEL_NAMES, build_model


@dataclass(frozen=True)
class TargetFamily:
    """A kind of CPU, as the target string of one representative."""

    name: str
    target: str
    description: str

    @cached_property
    def dse_target(self) -> DseTarget:
        """The parsed target, whose facts (lanes, dot product, fp16) every check derives from."""
        return parse_target(self.target)

    @property
    def precisions(self) -> tuple[str, ...]:
        """fp32, and int8 where the family has a dot product tvm_dse uses, fp16 where it computes in fp16."""
        return ("fp32",) + ("int8",) * (dot_intrinsic(self.dse_target) is not None) + \
            ("fp16",) * self.dse_target.has_fp16

    @property
    def runs_here(self) -> bool:
        """Whether this machine runs the family's code (its CPU has every instruction set the family uses)."""
        return self.dse_target.runs_on_host

    @property
    def runs_on_board(self) -> bool:
        """Whether the emulated aarch64 board runs the family's code."""
        return self.dse_target.is_aarch64


FAMILIES: tuple[TargetFamily, ...] = (
    TargetFamily("x86-avx2", "llvm -mcpu=haswell", "x86-64 with AVX2 and FMA: 8 fp32 lanes, 16 registers"),
    TargetFamily("x86-avx512", "llvm -mcpu=skylake-avx512", "x86-64 with AVX-512: 16 fp32 lanes, 32 registers"),
    TargetFamily("x86-avx512-vnni", "llvm -mcpu=cascadelake", "x86-64 with AVX-512 and VNNI (vpdpbusd)"),
    TargetFamily("aarch64-neon", "llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72 -mattr=+neon",
                 "Armv8.0 NEON: 4 fp32 lanes, 32 registers, no int8 dot product"),
    TargetFamily("aarch64-neon-dotprod", "llvm -mtriple=aarch64-linux-gnu -mattr=+neon,+dotprod",
                 "NEON with the int8 dot product (sdot)"),
    TargetFamily("aarch64-neon-fullfp16", "llvm -mtriple=aarch64-linux-gnu -mattr=+neon,+fullfp16",
                 "NEON with fp16 arithmetic (8 fp16 lanes)"),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)
HOST_FAMILY = TargetFamily("host", "host", "this machine's CPU")


def family(name: str) -> TargetFamily:
    """The family called ``name`` (one of :data:`FAMILY_NAMES`, or ``"host"``)."""
    for candidate in (*FAMILIES, HOST_FAMILY):
        if candidate.name == name:
            return candidate
    raise KeyError(f"unknown target family {name!r}; families: {', '.join(FAMILY_NAMES)}, host")


# --- models ---------------------------------------------------------------------------------------------

ZOO_MODELS = tuple(f"{name}-small" for name in MODEL_NAMES)
MATRIX_MODELS = ZOO_MODELS + AWKWARD_NAMES


def matrix_model(name: str) -> onnx.ModelProto:
    """A model of the matrix: ``"<zoo model>-small"`` or one of the awkward models."""
    if name in AWKWARD_NAMES:
        return build_awkward_model(name)
    if name in ZOO_MODELS:
        return build_model(name.removesuffix("-small"), small=True)
    raise KeyError(f"unknown matrix model {name!r}; models: {', '.join(MATRIX_MODELS)}")


# --- plans ----------------------------------------------------------------------------------------------

# the input every plan is checked on, the first of the calibration feeds of the plans with int8 nodes
CHECK_FEED_SEED = 0
# the strategies a uniform plan can give a whole network (nodes one does not apply to get a fallback)
UNIFORM_STRATEGIES = ("direct_nchw", "direct_nhwc", "spatial_pack_nchwc", "im2col_nchw", "winograd_f4_nchwc",
                      "depthwise_nchwc")


def random_plan(model: Model, graph: DseGraph, target: DseTarget, seed: int,
                precisions: Sequence[str] = ("fp32",), calibration: Calibration | None = None) -> Plan:
    """Every node on a random applicable strategy of ``precisions``; every join meeting in a random layout
    among its producers' and the model's own that holds all its operands (as the design space offers).
    A plan with int8 nodes takes its quantization from ``calibration`` (default: three random feeds)."""
    rng = random.Random(seed)
    choices = {}
    for node in graph.nodes:
        offered = [s for s in applicable_strategies(node.workload, target) if s.precision in precisions]
        choices[node.name] = rng.choice(offered or applicable_strategies(node.workload, target)).name
    produced: dict[int, str] = {}  # the layout each vertex's output is in
    join_layouts = {}
    for vertex in graph.vertices:
        if vertex.is_tunable:
            produced[vertex.id] = get_strategy(choices[vertex.name]).layouts(vertex.workload, target).output
        elif vertex.kind == "join":
            candidates = sorted({produced.get(i) or native_layout(vertex.input_shape(i)) for i in vertex.inputs}
                                | {native_layout(vertex.shape)})
            join_layouts[vertex.name] = rng.choice([layout for layout in candidates if vertex.holds(layout)])
            produced[vertex.id] = join_layouts[vertex.name]
    plan = Plan.create(model, target, choices, join_layouts, random_seed=seed)
    if any(get_strategy(choice).takes_input_quant for choice in choices.values()):
        plan.calibrate(calibration or random_calibration(model))
    return plan


def most_quantized_plan(model: Model, graph: DseGraph, target: DseTarget,
                        calibration: Calibration | None = None) -> Plan:
    """Every node an int8 strategy applies to on one, the others on the fp32 spatial pack's uniform plan."""
    return int8_plan(model, graph, target, calibration or random_calibration(model))


def random_calibration(model: Model) -> Calibration:
    """The model's calibration on three random feeds, the first of them the one plans are checked on."""
    return calibrate(model, [model.random_feed(seed) for seed in range(CHECK_FEED_SEED, CHECK_FEED_SEED + 3)])


# "uniform": each uniform fp32 strategy; "random": random fp32 plans; "reduced" (families with int8 or fp16):
# the uniform fp16 plan, a random plan over all the family's precisions and the most quantized plan
PLAN_KINDS = ("uniform", "random", "reduced")


def plan_kinds(precisions: Sequence[str]) -> tuple[str, ...]:
    """The kinds of plan a family with ``precisions`` has (no reduced ones with fp32 alone)."""
    return PLAN_KINDS if len(precisions) > 1 else PLAN_KINDS[:2]


def matrix_plans(model: Model, graph: DseGraph, target: DseTarget, precisions: Sequence[str],
                 kinds: Sequence[str] = PLAN_KINDS, seeds: Sequence[int] = (0, 1)) -> dict[str, Plan]:
    """The plans a model is checked under on a family with ``precisions``, by name, of the ``kinds`` asked
    for (:data:`PLAN_KINDS`). Uniform plans equal to an earlier one are left out; random fp32 plans are
    drawn for each of ``seeds``, the plan over all precisions for the first."""
    unknown = set(kinds) - set(PLAN_KINDS)
    if unknown:
        raise ValueError(f"unknown plan kinds {sorted(unknown)}; kinds: {', '.join(PLAN_KINDS)}")
    plans: dict[str, Plan] = {}
    if "uniform" in kinds:
        seen = set()
        for strategy in UNIFORM_STRATEGIES:
            plan = Plan.uniform(model, graph, target, strategy)
            signature = tuple(sorted((name, choice.strategy) for name, choice in plan.nodes.items()))
            if signature not in seen:
                seen.add(signature)
                plans[f"uniform {strategy}"] = plan
    if "random" in kinds:
        for seed in seeds:
            plans[f"random fp32 seed {seed}"] = random_plan(model, graph, target, seed)
    if "reduced" in kinds:
        calibration = random_calibration(model) if "int8" in precisions else None
        if "fp16" in precisions:
            plans["uniform spatial_pack_nchwc_fp16"] = Plan.uniform(model, graph, target, "spatial_pack_nchwc_fp16")
        if len(precisions) > 1:
            plans[f"random {'+'.join(precisions)} seed {seeds[0]}"] = random_plan(model, graph, target, seeds[0],
                                                                                precisions, calibration)
        if "int8" in precisions:
            plans["most quantized int8"] = most_quantized_plan(model, graph, target, calibration)
    return plans


# --- what a family's code contains -----------------------------------------------------------------------

@dataclass(frozen=True)
class AssemblyRule:
    """A pattern the assembly of a plan's kernels must contain (``present``) or must not."""

    what: str
    pattern: str
    present: bool


def assembly_rules(plan: Plan, graph: DseGraph, target: DseTarget) -> list[AssemblyRule]:
    """What the kernels of ``plan`` built for ``target`` must show, from the target's facts and the plan's
    nodes: fp32 multiply-adds as wide as the target's vectors where a node writes channel blocks of its
    fp32 lanes, the int8 dot product where a node is int8, fp16 arithmetic where a node computes in fp16;
    and none of the instructions the target lacks (wider vectors, a dot product, fp16 arithmetic), which
    would fault on a CPU of that family (the emulated board runs them all)."""
    strategies = {vertex.name: (get_strategy(plan.nodes[vertex.name].strategy), vertex) for vertex in graph.nodes}
    precisions = {strategy.precision for strategy, _ in strategies.values()}
    full_width = any(not strategy.reduced_precision and
                     Layout.parse(strategy.layouts(vertex.workload, target).output).block == target.fp32_lanes
                     for strategy, vertex in strategies.values())
    intrinsic = dot_intrinsic(target)
    rules = []
    if target.is_x86:
        register = {512: "zmm", 256: "ymm"}.get(target.vector_bits, "xmm")
        if full_width:
            rules.append(AssemblyRule(f"fp32 multiply-adds on {register}", rf"vfmadd\w*ps\s[^\n]*%{register}", True))
        if target.vector_bits < 512:
            rules.append(AssemblyRule("no 512-bit registers", r"%zmm", False))
        if not target.has_dotprod:
            rules.append(AssemblyRule("no VNNI dot product", r"\bvpdpbus", False))
        if not target.has_fp16:
            rules.append(AssemblyRule("no fp16 arithmetic", r"\bv(fn?madd\w*|add|sub|mul|div|max|min)ph\b", False))
    elif target.is_aarch64:
        lanes = target.fp32_lanes
        if full_width:
            rules.append(AssemblyRule(f"fp32 multiply-adds on {lanes} lanes", rf"\bfmla\s+v\d+\.{lanes}s", True))
        if not target.has_dotprod:
            rules.append(AssemblyRule("no int8 dot product", r"\b[su]dot\b", False))
        if not target.has_fp16:
            rules.append(AssemblyRule("no fp16 arithmetic", rf"\bf(mla|mul|add)\s+v\d+\.{2 * lanes}h", False))
    if "int8" in precisions and intrinsic is not None:
        rules.extend(AssemblyRule(f"the int8 dot product {instruction}", rf"\b{instruction}\b", True)
                     for instruction in intrinsic.instruction.split("+"))
    if "fp16" in precisions and target.has_fp16:
        pattern = rf"\bfmla\s+v\d+\.{2 * target.fp32_lanes}h" if target.is_aarch64 else r"\bvfn?madd\w*ph\b"
        rules.append(AssemblyRule("fp16 multiply-adds", pattern, True))
    return rules


def assembly_problems(assembly: str, plan: Plan, graph: DseGraph, target: DseTarget) -> list[str]:
    """The rules of :func:`assembly_rules` that ``assembly`` breaks, described; empty when it keeps all."""
    return [f"{'missing' if rule.present else 'unexpected'}: {rule.what} ({rule.pattern})"
            for rule in assembly_rules(plan, graph, target) if bool(re.search(rule.pattern, assembly)) != rule.present]


# runs a built plan (named) on a feed where its target is, returning the outputs
RunBuilt = Callable[[BuiltModel, str, Mapping[str, np.ndarray]], Sequence[np.ndarray]]


def plan_failures(model: Model, graph: DseGraph, target: DseTarget, plans: Mapping[str, Plan],
                  run: RunBuilt | None = None) -> list[str]:
    """Build every plan for ``target`` and check it: its assembly against :func:`assembly_rules`, and, where
    ``run(built, plan name, feed)`` gives its outputs (on this machine or a board), those against onnxruntime
    within :func:`validation_bound`: running the model itself, or for a plan with int8 nodes the model as the
    plan quantizes it (:func:`~tvm_dse.testing.quantized_reference.quantized_reference_model`). Returns what
    failed, one line per failure, naming the plan."""
    feed = model.random_feed(CHECK_FEED_SEED)
    fp32_reference = onnxruntime_outputs(model.onnx_model, feed) if run is not None else None
    failures = []
    for name, plan in plans.items():
        built = build_plan(model, plan, target, graph)
        failures += [f"{name}: {problem}" for problem in assembly_problems(built.assembly(), plan, graph, target)]
        if run is not None:
            quantized = any(get_strategy(c.strategy).takes_input_quant for c in plan.nodes.values())
            reference = onnxruntime_outputs(quantized_reference_model(model, plan, target), feed) if quantized \
                else fp32_reference
            error = max(relative_error(o, r) for o, r in zip(run(built, name, feed), reference))
            if not error <= validation_bound(plan):
                failures.append(f"{name}: relative error {error:.2e} > {validation_bound(plan):g}; "
                                f"{ {n: c.strategy for n, c in plan.nodes.items()} }, joins {plan.join_layouts}")
    return failures


def validation_bound(plan: Plan) -> float:
    """The relative error a built ``plan`` may have against its onnxruntime reference (the bounds ``optimize``
    validates with): rounding alone for fp32 plans; for plans with int8 nodes, against the model quantized as
    they are, the codes that rounding flips; with fp16 nodes their rounding."""
    return QUANTIZED_VALIDATION_BOUND if plan.reduced_precision_nodes() else VALIDATION_BOUND
