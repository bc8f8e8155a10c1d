"""The builder: compile candidates in parallel worker processes and export each as a shared library for
its target (cross-compiled for aarch64), with a time limit per candidate and errors captured per
candidate.

Workers are fresh processes that import only tvm_dse (about 2 s), not MetaSchedule's tensor intrinsics
(20-85 s here), so the default time limit fits this kind of machine.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..target import DseTarget
from ..workload import Workload
from .candidate import Candidate, Conversion

DEFAULT_BUILD_TIMEOUT_S = 120.0


@dataclass
class BuildResult:
    """A built candidate: its library and the shapes (and dtypes, fp32 where not given) of the kernel's
    arguments, or the error."""

    candidate: Candidate | Conversion
    library: str = ""
    argument_shapes: list[list[int]] = field(default_factory=list)
    argument_dtypes: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


def _build_in_worker(spec: dict[str, Any], target: dict[str, Any],
                     directory: str) -> tuple[str, list[list[int]], list[str], float]:
    """Build and export one candidate or conversion (see their ``spec()``); runs in a builder worker."""
    from ..layouts import Layout
    from ..target import parse_target

    start = time.perf_counter()
    parsed_target = parse_target(target)
    if spec["kind"] == "conversion":
        from ..lower import build_layout_transform

        shape = tuple(spec["shape"])
        built = build_layout_transform(shape, spec["source"], spec["destination"], parsed_target)
        layouts = [Layout.parse(spec["source"]), Layout.parse(spec["destination"])]
        shapes = [list(layout.shape(shape)) for layout in layouts]
        dtypes = [layout.dtype for layout in layouts]
        executable, prefix = built.executable, "conversion"
    else:
        from ..strategies.kernel import build_kernel, model_shapes

        workload = Workload.from_dict(spec["workload"])
        built = build_kernel(spec["strategy"], workload, parsed_target, decisions=spec["decisions"])
        layouts = built.strategy.layouts(workload, parsed_target)
        data_shape, _, output_shape = model_shapes(workload)
        data_layout = Layout.parse(layouts.data)
        shapes = [list(data_layout.shape(data_shape)), *(list(s) for s, _ in built.packed_weights),
                  list(Layout.parse(layouts.output).shape(output_shape))]
        dtypes = [data_layout.dtype, *(d for _, d in built.packed_weights), "float32"]
        executable, prefix = built.kernel, spec["strategy"]
    from ..build import export_library

    descriptor, path = tempfile.mkstemp(suffix=".so", prefix=f"{prefix}_", dir=directory)
    os.close(descriptor)
    export_library(executable, parsed_target, path)
    return path, shapes, dtypes, time.perf_counter() - start


class Builder:
    """Builds candidates in ``workers`` processes, ``timeout_s`` seconds at most each."""

    def __init__(self, workers: int | None = None, timeout_s: float = DEFAULT_BUILD_TIMEOUT_S,
                 directory: str | Path | None = None):
        self.workers = workers or max(1, (os.cpu_count() or 1))
        self.timeout_s = timeout_s
        self.directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="tvm_dse_build_"))
        self.directory.mkdir(parents=True, exist_ok=True)

    def build(self, candidates: Sequence[Candidate | Conversion], target: DseTarget,
              on_result: Callable[[BuildResult], None] | None = None) -> list[BuildResult]:
        """Build every candidate (decisions resolved); results in the candidates' order."""
        results = list(self.iter_build(candidates, target, on_result))
        order = {id(c): i for i, c in enumerate(candidates)}
        return sorted(results, key=lambda r: order[id(r.candidate)])

    def iter_build(self, candidates: Sequence[Candidate | Conversion], target: DseTarget,
                   on_result: Callable[[BuildResult], None] | None = None) -> Iterator[BuildResult]:
        """Yield build results as workers finish them."""
        from concurrent.futures import as_completed

        from tvm.support.popen_pool import PopenPoolExecutor

        if not candidates:
            return
        pool = PopenPoolExecutor(max_workers=min(self.workers, len(candidates)), timeout=self.timeout_s)
        try:
            futures = {}
            for candidate in candidates:
                if candidate.decisions is None:
                    raise ValueError(f"resolve the decisions of {candidate.describe()} before building it")
                future = pool.submit(_build_in_worker, candidate.spec(), target.to_dict(), str(self.directory))
                futures[future] = candidate
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
            pool.shutdown(wait=False)
