"""Shared pieces of the benchmark scripts: thread settings, machine description, whole-model rounds timed
as tvm_dse times them, writing a table with its JSON twin."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
DEFAULT_BUILD = "tvm default build"  # the contender name of TVM's default build in the whole-model tables
SETTLE_S = 0.5


def set_threads(threads: int) -> None:
    """Give TVM ``threads`` workers; must run before tvm_dse (or any TVM kernel) is imported and run.

    TVM's workers are left unpinned, as onnxruntime's and PyTorch's are: in one process on two cores,
    workers pinned to cores made onnxruntime's threads share a core with a spinning TVM worker at random,
    and the same single conv measured 0.8 or 2.8 ms from one run to the next."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ["TVM_BIND_THREADS"] = "0"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "nproc": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=HERE).stdout.strip()}


def time_callable(run: Callable[[], object], number: int = 10, warmup: int = 3) -> float:
    """Mean seconds of ``number`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    start = time.perf_counter()
    for _ in range(number):
        run()
    return (time.perf_counter() - start) / number


def interleaved_medians(contenders: dict[str, Callable[[], object]], rounds: int,
                        time_round: Callable[[str, Callable[[], object]], float]) -> dict[str, float]:
    """Median over ``rounds`` of each contender's time (ms), contenders interleaved A B C ... A B C ... so
    that drifts of the machine hit all of them alike; ``time_round(name, run)`` times one round in ms.

    Each turn starts after a pause: onnxruntime's and PyTorch's idle threads spin for a while after a run,
    and the next contender's threads would share the two cores with them."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            time.sleep(SETTLE_S)
            samples[name].append(time_round(name, run))
    return {name: statistics.median(values) for name, values in samples.items()}


def time_model_round(name: str, run: Callable[[], object]) -> float:
    """One round of a whole model, in ms: the median of tvm_dse's steady-state timing (the one ``optimize``
    reports; warm-up, runs batched to 25 ms, a disturbed attempt taken again) with 5 samples, or a single
    run after one for TVM's default build, which takes seconds per run."""
    from tvm_dse.timing import SteadyState, callable_sampler, steady_state, watch_this_machine  # after set_threads

    settings = (SteadyState(repeats=1, warmup_ms=0, max_warmup_ms=0, min_repeat_ms=0, attempts=1)
                if name == DEFAULT_BUILD else SteadyState(repeats=5))
    return steady_state(callable_sampler(run), settings, watch_this_machine).median_ms


def write_results(stem: str, markdown: str, data: dict[str, Any]) -> tuple[Path, Path]:
    """Print the table and write ``benchmarks/<stem>.md`` and its JSON twin."""
    print(markdown)
    md_path, json_path = HERE / f"{stem}.md", HERE / f"{stem}.json"
    md_path.write_text(markdown)
    json_path.write_text(json.dumps(data, indent=1))
    return md_path, json_path


class RuntimeWorker:
    """A contender warm in a process of its own (``runtime_worker.py``: KIND runs MODEL on INPUTS with THREADS),
    answering requests over its pipes; its first output is written to ``output``."""

    def __init__(self, python: str | Path, kind: str, model: Path, inputs: Path, threads: int, output: Path,
                 environment: dict[str, str]):
        self.output = output
        self.process = subprocess.Popen(
            [str(python), str(HERE / "runtime_worker.py"), kind, str(model), str(inputs), str(threads), str(output)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**environment, "TVM_NUM_THREADS": str(threads)}, cwd=output.parent)

    def wait_ready(self, name: str) -> None:
        """Wait until the worker is warm; a runtime may print a banner as it loads."""
        for line in self.process.stdout:
            if line.strip() == "ready":
                return
        raise RuntimeError(f"{name} did not start (run runtime_worker.py by hand to see why)")

    def ask(self, request: str) -> float:
        """``round`` (median ms per run of one round) or ``memory`` (peak resident MB)."""
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)
