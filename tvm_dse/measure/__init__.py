"""Measuring what it is handed where the target is: a parallel builder of any registered kind of
candidate, local and RPC runners, a resumable measurement store, and the session that carries them."""

from .builder import Builder, BuildOutput, BuildResult, register_build_function
from .candidate import CONVERSION_PREFIX, MeasurableCandidate, measurement_key
from .measurement import measure_candidates
from .runner import (LocalRunner, MeasurementError, MeasureSettings, ModelRun, RPCRunner, Runner, RunResult,
                     make_runner)
from .session import MeasurementSession
from .store import MeasurementStore, Record

__all__ = [
    "BuildOutput", "BuildResult", "Builder", "CONVERSION_PREFIX", "LocalRunner", "MeasurableCandidate",
    "MeasureSettings", "MeasurementError", "MeasurementSession", "MeasurementStore", "ModelRun", "RPCRunner",
    "Record", "RunResult", "Runner", "make_runner", "measure_candidates", "measurement_key",
    "register_build_function",
]
