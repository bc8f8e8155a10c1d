"""The measurement session: where and how one run measures (the parsed target, the runner, the store, the
builder, whether to show progress), handed as one object to everything that measures, as MetaSchedule's
``TuneContext`` is to its search."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..progress import Progress
from ..target import DseTarget
from ..timing import SteadyState
from .builder import Builder
from .candidate import MeasurableCandidate
from .measurement import measure_candidates
from .runner import ModelRun, Runner
from .store import MeasurementStore, Record


@dataclass(frozen=True)
class MeasurementSession:
    """Where and how one run measures.

    Attributes
    ----------
    target
        The target measured on, parsed once by the caller.
    runner
        Times built candidates and whole modules on the target (this machine, or boards over RPC).
    store
        Where measurements are looked up before measuring and appended as they arrive; None keeps nothing.
    builder
        Compiles and exports candidates in worker processes.
    show_progress
        Whether long measurements print progress lines.
    retry_failed
        Whether kernels that only failed before are measured again (a bounded number of times, see
        :func:`~tvm_dse.measure.measure_candidates`).
    """

    target: DseTarget
    runner: Runner
    store: MeasurementStore | None = None
    builder: Builder = field(default_factory=Builder)
    show_progress: bool = True
    retry_failed: bool = True

    def progress(self, total: int, label: str) -> Progress | None:
        """A progress line counting ``total`` steps of ``label``, or None when the session is quiet."""
        return Progress(total, label) if self.show_progress else None

    def measure(self, candidates: Sequence[MeasurableCandidate], show_progress: bool | None = None) -> list[Record]:
        """:func:`~tvm_dse.measure.measure_candidates` in this session: one record per candidate, in order
        (``show_progress`` None follows the session)."""
        return measure_candidates(candidates, self.target, self.runner, self.store, self.builder, self.retry_failed,
                                  self.show_progress if show_progress is None else show_progress)

    def run_model(self, built: Any, feed: Mapping[str, np.ndarray], timing: SteadyState,
                  workdir: str | Path) -> ModelRun:
        """Outputs and steady-state timing of a whole built model where the target is (see
        :meth:`Runner.run_model`)."""
        return self.runner.run_model(built, feed, timing, workdir)
