"""Synthetic design spaces for testing and comparing searchers without TVM, and a brute-force optimum.

The spaces look like measured ones: convolutions of plausible shapes whose strategies differ in speed,
layouts, transformed-weight size and workspace; layout conversions that cost milliseconds per MiB moved;
joins (residual adds) whose options are the layouts their inputs meet in. Every generator is
deterministic in its seed. Every tunable node has the ``direct_nchw`` strategy, so the all-NCHW plan is
always feasible even where some conversions are made impossible. :data:`SMALL_SPACES` are spaces small enough
to enumerate, on which the searcher checks (:mod:`tvm_dse.testing.checks`) compare results with brute force.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np

from ..space import INFEASIBLE, DesignSpace, Edge, Option, SpaceNode

LAYOUTS = ("NCHW", "NHWC", "NCHW8c", "NCHW4c")
MODEL_LAYOUT = "NCHW"

# name, input layout, output layout, time factor, weight factor, workspace in input activations
# (None: kernel height x width, as im2col needs), only for 3x3 kernels
_CONV_STRATEGIES = (
    ("direct_nchw", "NCHW", "NCHW", 1.0, 1.0, 0.0, False),
    ("direct_nhwc", "NHWC", "NHWC", 0.85, 1.0, 0.0, False),
    ("im2col_nchw", "NCHW", "NCHW", 0.7, 1.0, None, False),
    ("gemm_nhwc", "NHWC", "NHWC", 0.6, 1.0, None, False),
    ("spatial_pack_nchw8c", "NCHW8c", "NCHW8c", 0.55, 1.0, 0.0, False),
    ("spatial_pack_nchw4c", "NCHW4c", "NCHW4c", 0.65, 1.0, 0.0, False),
    ("pack_out_nchw8c", "NCHW", "NCHW8c", 0.75, 1.0, 0.0, False),
    ("winograd_nchw8c", "NCHW8c", "NCHW8c", 0.4, 16 / 9, 4.0, True),
    ("winograd_nchw4c", "NCHW4c", "NCHW4c", 0.45, 16 / 9, 4.0, True),
)
_DENSE_STRATEGIES = (
    ("dense_direct", "NCHW", "NCHW", 1.0, 1.0, 0.0, False),
    ("dense_packed8", "NCHW", "NCHW", 0.6, 1.0, 0.0, False),
    ("dense_packed16", "NCHW", "NCHW", 0.55, 1.02, 0.0, False),
    ("dense_gemm", "NCHW", "NCHW", 0.7, 1.0, 1.0, False),
)
_GFLOPS = 20.0  # the emulated CPU's speed under the reference strategy
_BYTES = 4  # float32


class _Builder:
    """Collects nodes and prices their edges: conversion costs per MiB moved, per ordered layout pair."""

    def __init__(self, seed: int, options: tuple[int, int], conversion_ms_per_mib: float, noise: float,
                 infeasible: float) -> None:
        if not 1 <= options[0] <= options[1]:
            raise ValueError(f"options must be (min, max) with 1 <= min <= max, got {options}")
        self.rng = np.random.default_rng(seed)
        self.options = options
        self.noise = noise
        self.nodes: list[SpaceNode] = []
        self.edges: list[Edge] = []
        self.conversion: dict[tuple[str, str], float] = {}
        for source in LAYOUTS:
            for target in LAYOUTS:
                factor = 0.0 if source == target else conversion_ms_per_mib * self.rng.uniform(0.6, 1.4)
                # only conversions between two blocked/non-model layouts may be unsupported, so every
                # layout can always reach NCHW and back
                if MODEL_LAYOUT not in (source, target) and source != target and self.rng.random() < infeasible:
                    factor = INFEASIBLE
                self.conversion[source, target] = factor

    def add(self, name: str, kind: str, options: list[Option], inputs: Sequence[int], activation_bytes: int) -> int:
        index = len(self.nodes)
        self.nodes.append(SpaceNode(name, kind, options, list(inputs), activation_bytes))
        for source in inputs:
            producer = self.nodes[source]
            mib = producer.activation_bytes / 2**20
            cost = [[self.conversion[p.output_layout, q.input_layout] * mib if p.output_layout != q.input_layout
                     else 0.0 for q in options] for p in producer.options]
            self.edges.append(Edge(source, index, cost))
        return index

    def fixed(self, name: str, kind: str, inputs: Sequence[int], activation_bytes: int) -> int:
        """A vertex in the model's own layout: input, layout-fixed operator or output."""
        return self.add(name, kind, [Option(MODEL_LAYOUT, 0.0, MODEL_LAYOUT, MODEL_LAYOUT)], inputs, activation_bytes)

    def join(self, name: str, inputs: Sequence[int], layouts: Sequence[str]) -> int:
        """A residual add: free, in whichever layout its inputs meet."""
        options = [Option(layout, 0.0, layout, layout) for layout in layouts]
        return self.add(name, "join", options, inputs, self.nodes[inputs[0]].activation_bytes)

    def tunable(self, name: str, source: int, channels: int, out_channels: int, size: int, kernel: int,
                stride: int) -> tuple[int, int]:
        """A convolution (``kernel`` > 0) or dense layer (``kernel`` == 0); returns (index, output size)."""
        out_size = max(1, size // stride)
        dense = kernel == 0
        macs = channels * out_channels * (1 if dense else out_size * out_size * kernel * kernel)
        base_ms = 2 * macs / (_GFLOPS * 1e6)
        weight = channels * out_channels * max(1, kernel * kernel) * _BYTES
        input_bytes = channels * (1 if dense else size * size) * _BYTES
        catalog = _DENSE_STRATEGIES if dense else _CONV_STRATEGIES
        applicable = [s for s in catalog if not s[6] or kernel == 3]
        count = min(len(applicable), int(self.rng.integers(self.options[0], self.options[1] + 1)))
        # the reference strategy is always there, the others drawn at random
        chosen = [applicable[0]] + [applicable[i] for i in
                                    sorted(self.rng.choice(np.arange(1, len(applicable)), count - 1, replace=False))]
        options = []
        for strategy, layout_in, layout_out, speed, weight_factor, workspace, _ in chosen:
            workspace = kernel * kernel if workspace is None else workspace
            latency = base_ms * speed * math.exp(self.rng.normal(0.0, self.noise))
            options.append(Option(strategy, round(latency, 6), layout_in, layout_out, int(weight * weight_factor),
                                  int(workspace * input_bytes)))
        kind = "dense" if dense else "conv2d"
        activation = out_channels * (1 if dense else out_size * out_size) * _BYTES
        return self.add(name, kind, options, [source], activation), out_size

    def space(self, model: str, seed: int) -> DesignSpace:
        return DesignSpace(model, "synthetic", self.nodes, self.edges, {"generator": model, "seed": seed})


def chain_space(length: int = 20, seed: int = 0, options: tuple[int, int] = (4, 8),
                conversion_ms_per_mib: float = 2.0, noise: float = 0.3, infeasible: float = 0.0) -> DesignSpace:
    """A chain of ``length`` convolutions between an input and an output vertex.

    Parameters
    ----------
    length
        Number of convolutions; channels double and the image halves every five of them.
    seed
        Seed of every random draw: the same arguments give the same space.
    options
        (min, max) strategies per convolution, ``direct_nchw`` always among them.
    conversion_ms_per_mib
        Mean cost of a layout conversion per MiB of activation converted (each ordered layout pair gets
        its own factor around it).
    noise
        Log-normal spread of each strategy's latency around its family's typical speed, so the fastest
        strategy changes from node to node.
    infeasible
        Probability that a conversion between two non-NCHW layouts is unsupported (infinite cost).
    """
    builder = _Builder(seed, options, conversion_ms_per_mib, noise, infeasible)
    channels, size = 32, 56
    previous = builder.fixed("input", "input", [], channels * size * size * _BYTES)
    for i in range(length):
        grow = i > 0 and i % 5 == 0
        kernel = 1 if builder.rng.random() < 0.25 else 3
        previous, size = builder.tunable(f"conv{i}", previous, channels, channels * 2 if grow else channels,
                                         size, kernel, 2 if grow else 1)
        channels = channels * 2 if grow else channels
    builder.fixed("output", "output", [previous], builder.nodes[previous].activation_bytes)
    return builder.space(f"chain{length}", seed)


def residual_space(stages: Sequence[int] = (2, 2, 2, 2), seed: int = 0, options: tuple[int, int] = (4, 8),
                   join_layouts: Sequence[str] = LAYOUTS, conversion_ms_per_mib: float = 2.0, noise: float = 0.3,
                   infeasible: float = 0.0, classifier: bool = True) -> DesignSpace:
    """A residual network shaped like ResNet-18 (the default): stem, basic blocks, classifier.

    Vertices come in the DSE graph's order: each block's two convolutions, its downsampling 1x1
    convolution (first block of every stage but the first), then the join adding the block's output to
    its shortcut. The default gives 21 tunable nodes (20 convolutions and the classifier) and 8 joins.

    Parameters
    ----------
    stages
        Basic blocks per stage; channels double and the image halves from one stage to the next.
    seed, options, conversion_ms_per_mib, noise, infeasible
        As for :func:`chain_space`.
    join_layouts
        The layouts a join may meet in: its options.
    classifier
        End with a layout-fixed flatten and a dense layer (ResNet's ``fc``) before the output.
    """
    builder = _Builder(seed, options, conversion_ms_per_mib, noise, infeasible)
    channels, size = 64, 56
    previous = builder.fixed("input", "input", [], 3 * 224 * 224 * _BYTES)
    # the stem's 7x7/2 convolution works on the 224x224 image; its max pool is transparent
    previous, _ = builder.tunable("conv1", previous, 3, channels, 112, 7, 2)
    for stage, blocks in enumerate(stages):
        for block in range(blocks):
            downsample = stage > 0 and block == 0
            width = channels * 2 if downsample else channels
            prefix = f"layer{stage + 1}.{block}"
            first, out_size = builder.tunable(f"{prefix}.conv1", previous, channels, width, size, 3,
                                              2 if downsample else 1)
            second, _ = builder.tunable(f"{prefix}.conv2", first, width, width, out_size, 3, 1)
            shortcut = previous
            if downsample:
                shortcut, _ = builder.tunable(f"{prefix}.downsample.conv", previous, channels, width, size, 1, 2)
            previous = builder.join(f"{prefix}.add", [second, shortcut], join_layouts)
            channels, size = width, out_size
    if classifier:
        flat = builder.fixed("flatten", "fixed", [previous], channels * _BYTES)
        previous, _ = builder.tunable("fc", flat, channels, 1000, 1, 0, 1)
    builder.fixed("output", "output", [previous], builder.nodes[previous].activation_bytes)
    name = "resnet18" if tuple(stages) == (2, 2, 2, 2) and classifier else f"residual{''.join(map(str, stages))}"
    return builder.space(name, seed)


def enumerate_plans(space: DesignSpace, limit: int = 200_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every plan of a small space with its cost and peak memory, computed independently of the searchers.

    Returns
    -------
    assignments, costs, peak_memories
        An (N, nodes) int array of every assignment, and their ``space.cost`` and ``space.peak_memory``.

    Raises
    ------
    ValueError
        If the space has more than ``limit`` plans.
    """
    sizes = space.sizes
    total = math.prod(sizes)
    if total > limit:
        raise ValueError(f"the space has {total} plans, more than the brute-force limit of {limit}")
    plans = np.indices(sizes).reshape(len(sizes), -1).T
    costs = np.zeros(total)
    weights = np.zeros(total, dtype=np.int64)
    workspace = np.zeros(total, dtype=np.int64)
    for index, node in enumerate(space.nodes):
        costs += np.array([o.latency_ms for o in node.options])[plans[:, index]]
        weights += np.array([o.weight_bytes for o in node.options], dtype=np.int64)[plans[:, index]]
        workspace = np.maximum(workspace, np.array([o.workspace_bytes for o in node.options])[plans[:, index]])
    for edge in space.edges:
        costs += np.array(edge.cost)[plans[:, edge.source], plans[:, edge.target]]
    return plans, costs, weights + workspace + space.live_bytes()


def brute_force_optimum(space: DesignSpace, memory_limit_bytes: float | None = None,
                        limit: int = 200_000) -> tuple[float, list[int]]:
    """The cheapest plan (within the memory limit) of a small space by enumeration: (cost, assignment).

    The cost is ``inf`` (and the assignment the first plan) if no plan is feasible.
    """
    plans, costs, memories = enumerate_plans(space, limit)
    if memory_limit_bytes is not None:
        costs = np.where(memories <= memory_limit_bytes, costs, math.inf)
    best = int(np.argmin(costs))
    return float(costs[best]), [int(choice) for choice in plans[best]]


# small enough to enumerate (at most ~1e5 plans), with and without impossible conversions
SMALL_SPACES: dict[str, Callable[[], DesignSpace]] = {
    "chain7": lambda: chain_space(7, seed=1, options=(4, 5)),
    "chain7_infeasible": lambda: chain_space(7, seed=3, options=(4, 5), infeasible=0.5),
    "residual11": lambda: residual_space((1, 1), seed=0, options=(3, 4), join_layouts=LAYOUTS[:3]),
    "residual11_infeasible": lambda: residual_space((1, 1), seed=2, options=(2, 3), infeasible=0.5),
    "residual2_noclassifier": lambda: residual_space((2,), seed=5, options=(3, 4), classifier=False),
}


def memory_limits(space: DesignSpace, quantiles: Sequence[float] = (0.1, 0.5)) -> list[float]:
    """Memory bounds at ``quantiles`` of the peak memories of every plan of a small space, between the
    leanest plan's and the largest one's, so they bind."""
    _, _, memories = enumerate_plans(space)
    return [float(np.quantile(memories, q)) for q in quantiles]


def with_accuracy_losses(space: DesignSpace, seed: int = 0) -> DesignSpace:
    """A copy of ``space`` where about half the tunable options lose some accuracy (as int8 ones would)."""
    space = copy.deepcopy(space)
    rng = np.random.default_rng(seed)
    for node in space.nodes:
        if node.is_tunable:
            for option in node.options:
                option.accuracy_loss = float(rng.uniform(0, 0.01)) if rng.random() < 0.5 else 0.0
    return space


def plan_losses(space: DesignSpace) -> tuple[np.ndarray, np.ndarray]:
    """The cost and the accuracy loss of every plan of a small space, in :func:`enumerate_plans`' order."""
    plans, costs, _ = enumerate_plans(space)
    losses = np.zeros(len(plans))
    for index, node in enumerate(space.nodes):
        losses += np.array([o.accuracy_loss for o in node.options])[plans[:, index]]
    return costs, losses
