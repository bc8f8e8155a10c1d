"""Measuring kernels where the target is: a parallel builder, local and RPC runners, and a resumable
measurement store."""

from .builder import Builder, BuildResult
from .candidate import Candidate, Conversion
from .measurement import measure_candidates
from .runner import LocalRunner, MeasurementError, MeasureSettings, RPCRunner, Runner, RunResult
from .store import MeasurementStore, Record

__all__ = [
    "BuildResult", "Builder", "Candidate", "Conversion", "LocalRunner", "MeasureSettings", "MeasurementError",
    "MeasurementStore", "RPCRunner", "Record", "RunResult", "Runner", "measure_candidates",
]
