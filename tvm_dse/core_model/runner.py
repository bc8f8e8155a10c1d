"""The cost model behind the runner interface: candidates and whole modules priced for a named core instead
of timed, so that ``optimize`` works for an aarch64 target with no board (or beside one, to compare).

Each library is profiled on the emulated board's Python (:mod:`.profile`: its outputs are real, its time is
not) and priced by :func:`.cost.modeled_cost` (a whole module function by function, :func:`.cost.function_costs`);
a candidate's "timing" is that one modeled figure, the same every time.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..board import board_python
from ..measure import Runner
from ..measure.builder import BuildResult
from ..measure.runner import ModelRun, RunResult
from ..target import DseTarget, physical_cores
from ..timing import SteadyState, Timing
from .cost import Core, function_costs, modeled_cost, module_ms
from .profile import SETUP_SCRIPT, LibraryProfile, LibraryRun, ProfilerError, plugin_path, profile_libraries
from .throughput import LLVM_MCA, function_cycles, modeled_cycles

# Candidates profiled in one emulated process: its start (the board's Python and TVM, seconds) is paid once
CANDIDATES_PER_PROCESS = 8


class ModeledRunner(Runner):
    """Prices builds for ``target``'s core (see :class:`~.cost.Core`; or ``core``, to validate the method on
    this machine's) with the cost model."""

    verb = "modeling"

    def __init__(self, target: DseTarget, core: Core | None = None):
        super().__init__()
        self.core = core or Core.of(target)
        self.arch = target.arch

    @property
    def board(self) -> str:
        """What the records and runs name as where they were taken."""
        return f"model of {self.core.describe()}"

    @property
    def thread_pool(self) -> str:
        return ""  # a library is profiled on one thread

    def check(self) -> None:
        plugin_path()
        if self.arch == "aarch64":
            board_python()
        if shutil.which(LLVM_MCA) is None:
            raise ProfilerError(f"{LLVM_MCA} is missing; run {SETUP_SCRIPT}")

    def busy(self) -> str:
        return ""  # nothing disturbs a model

    def run(self, builds: Sequence[BuildResult],
            on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
        chunks = [list(builds[start:start + CANDIDATES_PER_PROCESS])
                  for start in range(0, len(builds), CANDIDATES_PER_PROCESS)]
        with ThreadPoolExecutor(physical_cores()) as pool:
            priced = list(pool.map(lambda chunk: self._price(chunk, on_result), chunks))
        return [result for chunk in priced for result in chunk]

    def _price(self, builds: list[BuildResult], on_result: Callable[[RunResult], None] | None) -> list[RunResult]:
        runs = [LibraryRun(Path(b.library), b.argument_shapes, b.argument_dtypes or ["float32"] * len(b.argument_shapes))
                for b in builds]
        try:
            profiles = profile_libraries(runs, self.arch)
        except ProfilerError as error:
            if len(builds) > 1:  # find the one that failed: the others are priced all the same
                return [result for build in builds for result in self._price([build], on_result)]
            results = [RunResult(builds[0], status="run_error", board=self.board,
                                 error=f"{builds[0].candidate.describe()} failed under emulation: {error}")]
        else:
            results = [self._priced(build, profile) for build, profile in zip(builds, profiles)]
        for result in results:
            if on_result is not None:
                on_result(result)
        return results

    def _priced(self, build: BuildResult, profile: LibraryProfile) -> RunResult:
        try:
            return RunResult(build, self._timing(profile), board=self.board)
        except ProfilerError as error:
            return RunResult(build, status="run_error", board=self.board,
                             error=f"{build.candidate.describe()} could not be priced: {error}")

    def _timing(self, profile: LibraryProfile) -> Timing:
        cycles = modeled_cycles(profile.profile, self.core.triple, self.core.mcpu, self.core.mattr)
        return Timing.from_seconds([modeled_cost(cycles, profile.bytes_moved, self.core).ms / 1e3])

    def run_model(self, built: Any, feed: Mapping[str, np.ndarray], timing: SteadyState,
                  workdir: str | Path) -> ModelRun:
        [(outputs, functions)] = self._profile_models([(built, feed)], workdir)
        return ModelRun(outputs, Timing.from_seconds([module_ms(functions) / 1e3]), self.board)

    def price_functions(self, models: Sequence[tuple[Any, Mapping[str, np.ndarray]]],
                        workdir: str | Path) -> list[dict[str, tuple[float, int]]]:
        """Each built module (a :class:`tvm_dse.build.BuiltModel`) run once on its feed and priced function by
        function: per function of its library that the virtual machine called, the modeled ms per call and
        the calls per run. Modules are profiled in parallel, one emulated process each."""
        return [functions for _, functions in self._profile_models(models, workdir)]

    def _profile_models(self, models: Sequence[tuple[Any, Mapping[str, np.ndarray]]], workdir: str | Path
                        ) -> list[tuple[list[np.ndarray], dict[str, tuple[float, int]]]]:
        """Each module's outputs on its feed and its functions' modeled ms per call and calls per run."""
        with tempfile.TemporaryDirectory(dir=workdir) as work:
            runs = [LibraryRun(built.export(Path(work) / f"modeled{index}.so"), feed=feed)
                    for index, (built, feed) in enumerate(models)]
            with ThreadPoolExecutor(physical_cores()) as pool:
                profiles = list(pool.map(lambda run: profile_libraries([run], self.arch)[0], runs))
        core = self.core
        return [(profile.outputs or [], function_costs(function_cycles(profile.profile, core.triple, core.mcpu,
                                                                       core.mattr), profile.calls, core))
                for profile in profiles]
