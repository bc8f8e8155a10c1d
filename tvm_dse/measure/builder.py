"""The builder: compile candidates in parallel worker processes and export each as a shared library for
its target (cross-compiled for aarch64), with a time limit per candidate and errors captured per
candidate.

The builder knows no kind of candidate: each kind registers the function that builds it
(:func:`register_build_function`, as MetaSchedule's builder takes ``f_build``); the builder exports what
that function compiled. Workers are fresh processes that import only tvm_dse (about 2 s), not
MetaSchedule's tensor intrinsics (20-85 s here), so the default time limit fits this kind of machine.
"""

from __future__ import annotations

import importlib
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..target import DseTarget
from .candidate import MeasurableCandidate

DEFAULT_BUILD_TIMEOUT_S = 120.0


@dataclass
class BuildOutput:
    """What a build function hands the builder: the compiled module to export and the shapes and dtypes of
    the arguments its ``main`` takes (the runner feeds it random ones)."""

    executable: Any  # a tvm.runtime.Executable (anything with ``export_library``)
    argument_shapes: list[list[int]]
    argument_dtypes: list[str]


BuildFunction = Callable[[dict[str, Any], DseTarget], BuildOutput]

# kind -> "module:qualname" of its build function: workers are fresh processes, they import it by name
_BUILD_FUNCTIONS: dict[str, str] = {}


def _resolve(path: str) -> Any:
    module, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module)
    for name in qualname.split("."):
        found = getattr(found, name)
    return found


def register_build_function(kind: str, function: BuildFunction) -> None:
    """Build candidates of ``kind`` with ``function(spec, target) -> BuildOutput`` (``spec`` is the
    candidate's ``spec()``, ``target`` the parsed target).

    The builder's workers are fresh processes that import ``function`` by its module and qualified name, so
    it must be defined at the top level of an importable module, and that module must register it when
    imported. Raises ValueError for a function that is not (a lambda, a local function, one of
    ``__main__``) and for a kind already registered to another function.
    """
    path = f"{function.__module__}:{function.__qualname__}"
    try:
        importable = function.__module__ != "__main__" and _resolve(path) is function
    except (ImportError, AttributeError):
        importable = False
    if not importable:
        raise ValueError(f"the build function {path} of kind {kind!r} must be defined at the top level of an "
                         "importable module: builder workers import it by name")
    if _BUILD_FUNCTIONS.get(kind, path) != path:
        raise ValueError(f"kind {kind!r} is registered twice: {_BUILD_FUNCTIONS[kind]} and {path}")
    _BUILD_FUNCTIONS[kind] = path


def _build_function_path(candidate: MeasurableCandidate) -> str:
    try:
        return _BUILD_FUNCTIONS[candidate.kind]
    except KeyError:
        raise ValueError(f"no build function is registered for {candidate.describe()} (kind {candidate.kind!r}; "
                         f"registered: {', '.join(sorted(_BUILD_FUNCTIONS)) or 'none'}); register one with "
                         "tvm_dse.measure.register_build_function") from None


@dataclass
class BuildResult:
    """A built candidate: its library and the shapes (and dtypes, fp32 where not given) of the kernel's
    arguments, or the error."""

    candidate: MeasurableCandidate
    library: str = ""
    argument_shapes: list[list[int]] = field(default_factory=list)
    argument_dtypes: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


def _build_in_worker(function_path: str, spec: dict[str, Any], target: dict[str, Any], directory: str,
                     name: str) -> tuple[str, list[list[int]], list[str], float]:
    """Build one candidate with its kind's build function and export it into ``directory``; runs in a
    builder worker."""
    from ..export import export_library
    from ..target import parse_target

    start = time.perf_counter()
    parsed_target = parse_target(target)
    output = _resolve(function_path)(spec, parsed_target)
    descriptor, path = tempfile.mkstemp(suffix=".so", prefix=f"{name}_", dir=directory)
    os.close(descriptor)
    export_library(output.executable, parsed_target, path)
    return path, output.argument_shapes, output.argument_dtypes, time.perf_counter() - start


class Builder:
    """Builds candidates in ``workers`` processes, ``timeout_s`` seconds at most each."""

    def __init__(self, workers: int | None = None, timeout_s: float = DEFAULT_BUILD_TIMEOUT_S,
                 directory: str | Path | None = None):
        self.workers = workers or max(1, (os.cpu_count() or 1))
        self.timeout_s = timeout_s
        self.directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="tvm_dse_build_"))
        self.directory.mkdir(parents=True, exist_ok=True)

    def build(self, candidates: Sequence[MeasurableCandidate], target: DseTarget,
              on_result: Callable[[BuildResult], None] | None = None) -> list[BuildResult]:
        """Build every candidate (decisions resolved); results in the candidates' order."""
        results = list(self.iter_build(candidates, target, on_result))
        order = {id(c): i for i, c in enumerate(candidates)}
        return sorted(results, key=lambda r: order[id(r.candidate)])

    def iter_build(self, candidates: Sequence[MeasurableCandidate], target: DseTarget,
                   on_result: Callable[[BuildResult], None] | None = None) -> Iterator[BuildResult]:
        """Yield build results as workers finish them."""
        from concurrent.futures import as_completed

        from tvm.support.popen_pool import PopenPoolExecutor

        if not candidates:
            return
        paths = [_build_function_path(candidate) for candidate in candidates]  # before any building
        unresolved = [candidate.describe() for candidate in candidates if candidate.decisions is None]
        if unresolved:
            raise ValueError(f"resolve the decisions of {', '.join(unresolved)} before building")
        pool = PopenPoolExecutor(max_workers=min(self.workers, len(candidates)), timeout=self.timeout_s)
        futures = {}
        try:
            # the pool's threads, made by submit, start the workers: made with Ctrl-C blocked, they pass the
            # block on to the workers, which leave the interrupt to this process (it stops them)
            unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                for candidate, path in zip(candidates, paths):
                    future = pool.submit(_build_in_worker, path, candidate.spec(), target.to_dict(),
                                         str(self.directory), candidate.strategy)
                    futures[future] = candidate
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
            for future in as_completed(futures):
                candidate = futures[future]
                try:
                    path, shapes, dtypes, seconds = future.result()
                    result = BuildResult(candidate, path, shapes, dtypes, seconds=seconds)
                except TimeoutError:
                    result = BuildResult(candidate, error=f"build of {candidate.describe()} timed out after "
                                                          f"{self.timeout_s:.0f} s")
                except Exception as error:  # a worker's exception arrives re-raised, whatever its type
                    result = BuildResult(candidate, error=f"build of {candidate.describe()} failed: "
                                                          f"{type(error).__name__}: {error}")
                if on_result is not None:
                    on_result(result)
                yield result
        finally:
            # builds not started yet would each start a worker again after the shutdown kills the running
            # ones (an interrupted run would wait for them): cancel them first
            for future in futures:
                future.cancel()
            pool.shutdown(wait=False)
