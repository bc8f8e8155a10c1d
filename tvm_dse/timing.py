"""Timing results (the median and spread of repeated measurements, in milliseconds) and the one way a whole
model is timed: in steady state, as a user running it continuously sees it.

:func:`steady_state` drives a *sampler*, ``sample(number, repeat)``: ``repeat`` samples, each the mean
seconds per run of ``number`` back-to-back runs. TVM's ``time_evaluator`` is one (on this machine or on a
board over RPC: :func:`tvm_sampler`); any Python callable becomes one with :func:`callable_sampler`
(onnxruntime, the benchmarks' peers), so every contender is timed by the same rule.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import median_low
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from .errors import TvmDseError

# A timing is taken again when its samples' interquartile range exceeds this share of their median, or
# when other work took more than MAX_OTHERS of the machine meanwhile, at most ATTEMPTS times in all
MAX_SPREAD = 0.10
MAX_OTHERS = 0.10
ATTEMPTS = 3
# sample(number, repeat) -> ``repeat`` mean seconds per run, each over ``number`` back-to-back runs
Sampler = Callable[[int, int], Sequence[float]]
R = TypeVar("R")  # a round of some timing
# watch() starts watching the machine; calling what it returns gives the share of the machine's CPU time
# that went to something else meanwhile
Watch = Callable[[], Callable[[], float]]


@dataclass(frozen=True)
class Timing:
    """Statistics of repeated measurements of one thing, in milliseconds.

    ``repeats`` samples, each the mean of ``number`` runs; ``spread`` is their interquartile range over
    their median; ``runs`` counts every run made, warm-up and discarded attempts included; ``disturbed``
    says every attempt was spread beyond the steady-state bound or shared the machine with other work, or,
    for the fastest of several rounds (:func:`quiet_round`), that the machine's speed changed between them.
    """

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    number: int = 1
    spread: float = 0.0
    runs: int = 0
    disturbed: bool = False

    @classmethod
    def from_seconds(cls, samples: Sequence[float], number: int = 1) -> "Timing":
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no timing samples")
        median = float(np.median(ms))
        q25, q75 = np.percentile(ms, [25, 75])
        return cls(median, float(ms.mean()), float(ms.std()), float(ms.min()), float(ms.max()), int(ms.size),
                   number, float((q75 - q25) / median) if median > 0 else 0.0, int(ms.size) * number)

    def clearly_faster_than(self, other: "Timing") -> bool:
        """Whether this median is below ``other``'s by more than the noise of either: half the larger
        spread, and at least 2%."""
        margin = max(0.02, max(self.spread, other.spread) / 2)
        return self.median_ms < other.median_ms * (1 - margin)

    def gflops(self, flops: int) -> float:
        """Throughput for a computation of ``flops`` floating-point operations, at the median."""
        return flops / (self.median_ms * 1e-3) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        runs = f"{self.repeats} x {self.number} runs" if self.number > 1 else f"n={self.repeats}"
        return (f"{self.median_ms:.3f} ms (min {self.min_ms:.3f}, max {self.max_ms:.3f}, spread "
                f"{100 * self.spread:.1f}%, {runs}{', DISTURBED' if self.disturbed else ''})")


@dataclass(frozen=True)
class SteadyState:
    """How a whole model is timed.

    Warm-up runs until ``warmup_ms`` have passed and two successive warm-up batches agree within
    ``settled`` (at most ``max_warmup_ms``): the first runs of a loaded module are slower (page faults,
    the thread pool starting, caches, the clock ramping up). Then ``repeats`` samples, each batching runs
    up to ``min_repeat_ms``, so that a short model is not timed at the clock's resolution. When their
    spread (interquartile range / median) exceeds ``max_spread``, or (timing on this machine) other
    processes or the hypervisor took more than ``max_others`` of the machine's CPU time meanwhile, the
    samples are taken again, at most ``attempts`` times in all; the best attempt is kept (quiet before
    busy, then least spread), flagged as disturbed if it is still either.
    """

    repeats: int = 10
    min_repeat_ms: float = 25.0
    warmup_ms: float = 300.0
    max_warmup_ms: float = 3000.0
    settled: float = 0.05
    max_spread: float = MAX_SPREAD
    max_others: float = MAX_OTHERS
    attempts: int = ATTEMPTS

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.attempts < 1:
            raise TvmDseError(f"timed samples (repeat) and attempts must be at least 1; got {self.repeats} and "
                              f"{self.attempts}")
        if not (0 <= self.warmup_ms <= self.max_warmup_ms and self.min_repeat_ms >= 0):
            raise TvmDseError("warmup_ms must lie in [0, max_warmup_ms] and min_repeat_ms must be >= 0")


def steady_state(sample: Sampler, settings: SteadyState = SteadyState(), watch: Watch | None = None) -> Timing:
    """Time in steady state through ``sample``: warm up, batch short runs, re-measure a disturbed attempt;
    ``watch`` (:func:`watch_this_machine` where the runs are on this machine) sees other work on it.

    The warm-up is counted in the sampler's own time (what the runs took), in batches of 3 samples that
    each last about as long as all the warm-up before them: a slow start fading over time T shows as a
    change between batches until the warm-up has lasted a few T, whatever the length of one run."""
    runs, number, previous, warmed_ms = 0, 1, math.inf, 0.0
    while True:
        batch = sample(number, 3)
        per_run = float(np.median(batch))
        runs += 3 * number
        warmed_ms += float(np.sum(batch)) * number * 1e3
        settled = abs(per_run - previous) <= settings.settled * previous
        if warmed_ms >= settings.max_warmup_ms or (warmed_ms >= settings.warmup_ms and settled):
            break
        previous = per_run
        if per_run > 0:
            number = max(number, math.ceil(warmed_ms / 1e3 / (3 * per_run)))

    def attempt() -> tuple[Timing, tuple[bool, ...]]:
        nonlocal number, per_run
        number = batch_size(per_run, settings.min_repeat_ms, number)
        others = watch() if watch is not None else None
        timing = Timing.from_seconds(sample(number, settings.repeats), number)
        busy = others is not None and others() > settings.max_others
        # a warm-up that ended slow (disturbed, or cut off at max_warmup_ms) batches too few runs: the
        # attempt is taken again, batched by its own median
        per_run = timing.median_ms / 1e3
        return timing, (number < batch_size(per_run, settings.min_repeat_ms / 2, 1), busy)

    timing, (_, busy), attempt_runs = least_disturbed(attempt, settings.attempts, settings.max_spread)
    return replace(timing, runs=runs + attempt_runs, disturbed=busy or timing.spread > settings.max_spread)


def quietest(rounds: Sequence[R], ms: Callable[[R], float], max_drift: float = MAX_SPREAD) -> tuple[R, bool]:
    """Of ``rounds`` (timings of one thing apart in time, ``ms`` each one's latency) the one of least latency:
    the machine as it runs when nothing slows it. A virtual machine may run 1.5-1.8x slower for minutes at a
    time with nothing to see in ``/proc/stat`` and one-thread probes unchanged (its neighbours on the host),
    longer than a few rounds last, so their median is no steadier. Returns it and whether the machine's
    speed changed between rounds: the median round (the lower middle one of an even count) lies more than
    ``max_drift`` above it."""
    fastest = min(rounds, key=ms)
    return fastest, median_low(ms(taken) for taken in rounds) > ms(fastest) * (1 + max_drift)


def quiet_round(rounds: Sequence[Timing], max_drift: float = MAX_SPREAD) -> Timing:
    """The fastest of several rounds of a whole model's timing (see :func:`quietest`), flagged as disturbed
    where it was or where the machine's speed changed between rounds."""
    fastest, drifted = quietest(rounds, lambda timing: timing.median_ms, max_drift)
    return replace(fastest, disturbed=fastest.disturbed or drifted)


def least_disturbed(attempt: Callable[[], tuple[Timing, tuple[bool, ...]]], attempts: int,
                    max_spread: float) -> tuple[Timing, tuple[bool, ...], int]:
    """Take ``attempt`` (a timing and its faults: the machine was busy, too few runs were batched, ...)
    until one has no fault and a spread of at most ``max_spread``, at most ``attempts`` times.

    Returns the best attempt (the fewest faults, earlier ones weighing more, then the least spread), its
    faults, and the runs made by all attempts."""
    best: tuple[tuple[bool, ...], float, Timing] | None = None
    runs = 0
    for _ in range(attempts):
        timing, faults = attempt()
        runs += timing.runs
        if best is None or (faults, timing.spread) < best[:2]:
            best = (faults, timing.spread, timing)
        if not any(faults) and timing.spread <= max_spread:
            break
    faults, _, timing = best
    return timing, faults, runs


def batch_size(per_run_s: float, min_repeat_ms: float, fallback: int) -> int:
    """Runs per sample so that one sample lasts at least ``min_repeat_ms`` at ``per_run_s`` seconds a run."""
    return max(1, math.ceil(min_repeat_ms / 1e3 / per_run_s)) if per_run_s > 0 else fallback


def watch_this_machine() -> Callable[[], float]:
    """Start watching this machine: the returned function gives the share of all its cores' time since the
    start that went to other processes or to the hypervisor (steal), from ``/proc/stat`` less this
    process's own CPU time; 0 where ``/proc/stat`` is not there."""

    def now() -> tuple[float, float, float, float] | None:
        try:
            fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, _, _, irq, softirq, steal = fields
        ticks = os.sysconf("SC_CLK_TCK")
        own = os.times()
        return ((user + nice + system + irq + softirq) / ticks, steal / ticks, own.user + own.system,
                time.perf_counter())

    start = now()

    def others() -> float:
        end = now()
        if start is None or end is None or end[3] <= start[3]:
            return 0.0
        busy, steal, own, wall = (b - a for a, b in zip(start, end))
        return max(0.0, busy - own + steal) / (wall * (os.cpu_count() or 1))

    return others


def callable_sampler(run: Callable[[], object]) -> Sampler:
    """A sampler timing Python calls of ``run`` with the wall clock."""

    def sample(number: int, repeat: int) -> list[float]:
        samples = []
        for _ in range(repeat):
            began = time.perf_counter()
            for _ in range(number):
                run()
            samples.append((time.perf_counter() - began) / number)
        return samples

    return sample


def tvm_sampler(module: Any, arguments: Sequence[Any], device: Any, function: str = "main") -> Sampler:
    """A sampler running ``module[function](*arguments)`` through TVM's ``time_evaluator`` where ``device``
    is (on this machine, or on a board over RPC: the runs are timed there, one round trip per call)."""

    def sample(number: int, repeat: int) -> list[float]:
        evaluator = module.time_evaluator(function, device, number=number, repeat=repeat)
        return list(evaluator(*arguments).results)

    return sample
