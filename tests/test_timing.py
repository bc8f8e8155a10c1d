"""Steady-state timing: warm-up until the runs settle, short runs batched, a disturbed attempt measured again
and flagged when it stays disturbed; the runtime's empty warnings dropped where modules are saved."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tvm

from tvm_dse import TvmDseError, build_baseline, load_model
from tvm_dse.export import load_library, runtime_warnings_without_message_dropped
from tvm_dse.timing import (SteadyState, Timing, callable_sampler, least_disturbed, quiet_round, steady_state,
                             watch_this_machine)

QUICK = SteadyState(repeats=8, warmup_ms=0, min_repeat_ms=0)


class Machine:
    """A sampler following a script: per-run seconds for the n-th run, and a noise pattern per attempt."""

    def __init__(self, per_run, scatter=()):
        self.per_run, self.scatter, self.runs, self.batches = per_run, list(scatter), 0, []

    def __call__(self, number, repeat):
        samples = []
        for index in range(repeat):
            seconds = np.mean([self.per_run(self.runs + i) for i in range(number)])
            self.runs += number
            samples.append(seconds)
        if repeat > 3 and self.scatter:  # a timed attempt (warm-up batches take 3 samples)
            spread = self.scatter.pop(0)
            samples = [s * (1 + spread * (i % 2)) for i, s in enumerate(samples)]
        self.batches.append((number, repeat))
        return samples


def test_warm_up_runs_until_the_runs_settle_and_only_settled_runs_are_timed():
    # a loaded module starts twice as slow and speeds up over its first few dozen runs
    machine = Machine(lambda run: 1e-3 * (1 + np.exp(-run / 15)))
    timing = steady_state(machine, SteadyState(repeats=8, warmup_ms=50, min_repeat_ms=0))
    assert timing.median_ms == pytest.approx(1.0, rel=0.02) and not timing.disturbed
    assert timing.runs == machine.runs and timing.runs >= 60 + timing.repeats


def test_short_runs_are_batched_up_to_min_repeat_ms():
    machine = Machine(lambda run: 1e-5)
    timing = steady_state(machine, SteadyState(repeats=5, min_repeat_ms=25, warmup_ms=0))
    assert timing.number == 2500 and timing.repeats == 5 and machine.batches[-1] == (2500, 5)
    assert timing.median_ms == pytest.approx(0.01) and timing.spread == 0.0


def test_a_warm_up_that_ends_slow_does_not_leave_the_samples_too_short():
    # the warm-up is cut off at max_warmup_ms while the runs are 10x slow; then they run at full speed
    machine = Machine(lambda run: 1e-3 if run < 60 else 1e-4)
    settings = SteadyState(repeats=5, min_repeat_ms=25, warmup_ms=20, max_warmup_ms=50)
    timing = steady_state(machine, settings)
    assert timing.median_ms == pytest.approx(0.1) and timing.number * timing.median_ms >= settings.min_repeat_ms
    assert machine.batches[-1] == (250, 5) and timing.runs == machine.runs


def test_a_disturbed_attempt_is_measured_again_and_the_quiet_one_kept():
    machine = Machine(lambda run: 1e-3, scatter=[1.0, 0.0])
    timing = steady_state(machine, QUICK)
    assert not timing.disturbed and timing.spread == 0.0 and timing.median_ms == pytest.approx(1.0)
    assert timing.runs == machine.runs  # the discarded attempt's runs are counted


def test_a_machine_that_stays_busy_is_flagged_disturbed():
    machine = Machine(lambda run: 1e-3, scatter=[1.0, 0.6, 0.8])
    timing = steady_state(machine, QUICK)
    assert timing.disturbed and timing.spread > QUICK.max_spread
    assert sum(1 for number, repeat in machine.batches if repeat == QUICK.repeats) == QUICK.attempts
    assert "DISTURBED" in str(timing)


def test_least_disturbed_stops_at_the_first_clean_attempt_else_keeps_the_best():
    def attempts(*taken):
        queue = list(taken)
        return lambda: queue.pop(0)

    def timing(spread, runs=10):
        return Timing(1.0, 1.0, 0.0, 1.0, 1.0, 5, spread=spread, runs=runs)

    clean = timing(0.02)
    kept, faults, runs = least_disturbed(attempts((timing(0.5), (False,)), (clean, (False,))), 3, 0.1)
    assert kept is clean and faults == (False,) and runs == 20
    # a busy machine weighs more than a spread; among equal faults the least spread wins; all runs count
    quiet_but_spread, busy_but_tight = timing(0.3), timing(0.01)
    kept, faults, runs = least_disturbed(attempts((busy_but_tight, (True,)), (quiet_but_spread, (False,)),
                                                  (timing(0.4), (False,))), 3, 0.1)
    assert kept is quiet_but_spread and faults == (False,) and runs == 30


def test_the_quiet_round_is_the_fastest_and_flagged_where_the_machine_slowed_between_rounds():
    def round_of(ms, disturbed=False):
        return Timing(ms, ms, 0.0, ms, ms, 10, disturbed=disturbed)

    steady = [round_of(ms) for ms in (5.1, 5.0, 5.3, 5.2, 5.05)]
    assert quiet_round(steady) == steady[1] and not quiet_round(steady).disturbed
    # three of five rounds in a phase 1.6x slower: the median is slow, the fastest is not, and it says so
    drifted = [round_of(ms) for ms in (8.0, 5.0, 8.2, 5.1, 8.1)]
    assert quiet_round(drifted).median_ms == 5.0 and quiet_round(drifted).disturbed
    assert not quiet_round(drifted, max_drift=0.7).disturbed
    # a fastest round flagged in itself stays flagged
    assert quiet_round([round_of(5.0, disturbed=True), round_of(5.1)]).disturbed


def test_another_process_busy_on_the_machine_is_seen_and_flagged():
    model = load_model("zoo:squeezenet1_1-small")
    built = build_baseline(model)
    feed = model.random_feed()
    settings = SteadyState(repeats=6, warmup_ms=50, min_repeat_ms=10)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.2)
        others = watch_this_machine()
        time.sleep(0.5)
        assert others() > 0.5  # the busy loops, not this process, held the cores
        timing = built.time(feed, settings)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    # every attempt was taken: each batches by its own per-run time, so only the last one's batch is known
    # (the warm-up ran one batch of 3 samples at least)
    assert timing.disturbed
    assert timing.runs >= 3 + (settings.attempts - 1) * settings.repeats + settings.repeats * timing.number


def test_bad_settings_are_refused():
    with pytest.raises(TvmDseError, match="at least 1"):
        SteadyState(repeats=0)
    with pytest.raises(TvmDseError, match="warmup_ms"):
        SteadyState(warmup_ms=5000, max_warmup_ms=1000)


def test_a_real_module_and_a_python_callable_are_timed_by_the_same_rule():
    model = load_model("zoo:squeezenet1_1-small")
    built = build_baseline(model)
    feed = model.random_feed()
    settings = SteadyState(repeats=4)
    module = built.time(feed, settings)
    python = steady_state(callable_sampler(lambda: built.run(feed)), settings)
    for timing in (module, python):
        assert isinstance(timing, Timing) and timing.repeats == 4 and timing.runs > 4 * timing.number
        assert 0 < timing.min_ms <= timing.median_ms <= timing.max_ms
    # the Python call adds its own overhead to the same module's runs, never removes any
    assert python.median_ms >= 0.8 * module.median_ms


def test_saving_and_loading_a_module_print_no_empty_runtime_warning_but_keep_everything_else(tmp_path, capfd):
    model = load_model("zoo:squeezenet1_1-small")
    built = build_baseline(model)
    built.run(model.random_feed())  # a module that has run writes its VM's scopes with a warning each
    built.executable.export_library(str(tmp_path / "unfiltered.so"))
    tvm.runtime.load_module(str(tmp_path / "unfiltered.so"))
    unfiltered = capfd.readouterr().err  # what TVM's runtime prints unless held back
    assert "Warning: Scope Saving:" in unfiltered and "Warning: Scope Loaded:" in unfiltered
    with runtime_warnings_without_message_dropped():
        os.write(2, b"[04:05:06] /src/x.cc:12: Warning: Scope Saving:\n")
        os.write(2, b"[04:05:06] /src/x.cc:13: Warning: something real: 42\n")
        print("a message of our own", file=sys.stderr)
    load_library(built.export(tmp_path / "model.so"))
    err = capfd.readouterr().err
    assert "Scope Saving" not in err and "Scope Loaded" not in err
    assert "something real: 42" in err and "a message of our own" in err
