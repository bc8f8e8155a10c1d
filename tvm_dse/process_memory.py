"""The memory a deployed library takes, measured: a process of its own, with TVM's runtime library only (no
compiler, no TVM Python package, nothing of tvm_dse but :mod:`tvm_dse.deployed_library`), notes its peak
resident set once numpy and the runtime are loaded, then loads the library and runs the model once. The
difference is what the plan adds, which its memory model predicts
(:meth:`tvm_dse.space.DesignSpace.peak_memory`: weights, the largest workspace, the largest live
activations); the runtime's part depends on how the library is deployed, not on the plan.

:func:`measure_process_memory` runs this file as that process:

    python process_memory.py LIBRARY INPUTS.npz      # prints {"runtime_bytes": ..., "peak_bytes": ...}
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ProcessMemory:
    """Peak resident bytes of a process running a library: ``runtime_bytes`` before the model was loaded,
    ``peak_bytes`` after it was loaded and run."""

    runtime_bytes: int
    peak_bytes: int

    @property
    def plan_bytes(self) -> int:
        """What loading and running the model added."""
        return self.peak_bytes - self.runtime_bytes


def measure_process_memory(library: str | Path, feed: Mapping[str, Any]) -> ProcessMemory:
    """Run ``library`` (exported for this machine) on ``feed`` (the model's inputs by name, in order) once
    in a process of its own, with this process's thread count, and return its memory."""
    import numpy as np

    from .errors import TvmDseError

    with tempfile.TemporaryDirectory(prefix="tvm_dse_memory_") as folder:
        inputs = Path(folder) / "inputs.npz"
        np.savez(inputs, *feed.values())
        done = subprocess.run([sys.executable, __file__, str(library), str(inputs)], capture_output=True,
                              text=True, timeout=_TIMEOUT_S)
    if done.returncode != 0:
        raise TvmDseError(f"running {library} in a process of its own to measure its memory failed: "
                          f"{done.stderr.strip()[-2000:]}")
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    return ProcessMemory(facts["runtime_bytes"], facts["peak_bytes"])


def _main(library: str, inputs: str) -> None:
    sys.modules["torch"] = None  # TVM's FFI imports PyTorch wherever it is installed; a deployment has none
    import numpy as np

    # this file's folder is the script's path
    from deployed_library import DeployedLibrary, load_runtime, peak_resident_bytes

    load_runtime()
    runtime = peak_resident_bytes()
    DeployedLibrary(library)(*np.load(inputs).values())
    print(json.dumps({"runtime_bytes": runtime, "peak_bytes": peak_resident_bytes()}))


if __name__ == "__main__":
    _main(*sys.argv[1:])
