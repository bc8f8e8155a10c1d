"""Built models: a model compiled for a target, runnable and timeable on the host or, uploaded over an RPC
session, on a board; exportable as a library for either.

:func:`build_baseline` compiles with TVM's default pipeline, which schedules nothing (naive loops): it is
the reference every tvm_dse plan is validated against and compared with.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import tvm
from tvm import relax

from .frontend import Model, ModelInput
from .target import DseTarget, TargetLike, parse_target
from .timing import SteadyState, Timing, steady_state, tvm_sampler, watch_this_machine
from .errors import TvmDseError
from .export import export_library


class BuiltModel:
    """A Relax executable for one target, with the model's inputs so it can be fed by name, and the weights its
    ``main`` takes after them (none where it holds its constants itself)."""

    def __init__(self, executable: relax.VMExecutable, target: DseTarget, inputs: Sequence[ModelInput],
                 weights: Sequence[tvm.runtime.Tensor] = ()):
        self.executable = executable
        self.target = target
        self.inputs = list(inputs)
        self.weights = list(weights)
        self._vm: relax.VirtualMachine | None = None
        self._exported: tuple[Path, tuple[int, int, int]] | None = None  # the library written and its identity

    def _host_vm(self) -> relax.VirtualMachine:
        # Checked once: asking LLVM for the target's features took 0.2-0.3 ms, 5% of a small model's run.
        if self._vm is None:
            if not self.target.runs_on_host:
                raise TvmDseError(f"this model was built for {self.target.key}, which this machine cannot run; "
                                  "export it and run it on the board (or measure it over RPC)")
            self._vm = relax.VirtualMachine(self.executable, tvm.cpu())
        return self._vm

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on the host; returns the model outputs in order."""
        result = self._host_vm()["main"](*_arguments(self.inputs, feed, tvm.cpu()), *self.weights)
        return _flatten_outputs(result)

    def time(self, feed: Mapping[str, np.ndarray], settings: SteadyState = SteadyState()) -> Timing:
        """Steady-state latency on the host (see :func:`tvm_dse.timing.steady_state`)."""
        return steady_state(tvm_sampler(self._host_vm(), _arguments(self.inputs, feed, tvm.cpu()) + self.weights,
                                        tvm.cpu()), settings, watch_this_machine)

    def call_times(self, feed: Mapping[str, np.ndarray], runs: int) -> dict[str, list[float]]:
        """Seconds of every call of each of the module's functions over ``runs`` runs on the host, after one
        unhooked run, timed through the virtual machine's instrument hook (a few microseconds per call). The
        hook is set on a virtual machine of its own, so :meth:`run` and :meth:`time` stay unhooked."""
        self._host_vm()  # refuses a target this machine cannot run
        vm = relax.VirtualMachine(self.executable, tvm.cpu())
        arguments = _arguments(self.inputs, feed, tvm.cpu()) + self.weights
        vm["main"](*arguments)
        seconds: dict[str, list[float]] = defaultdict(list)
        started: dict[str, float] = {}

        def instrument(func: object, name: str, before: bool, result: object, *args: object) -> int:
            if before:
                started[name] = time.perf_counter()
            else:
                seconds[name].append(time.perf_counter() - started[name])
            return 0  # go on normally

        vm.set_instrument(instrument)
        for _ in range(runs):
            vm["main"](*arguments)
        return dict(seconds)

    def export(self, path: str | Path) -> Path:
        """Write a shared library, weights included, loadable on the target (cross-compiled for aarch64) with
        :func:`tvm_dse.export.load_library`; its ``main`` takes :func:`tvm_dse.export.load_weights`'s tensors
        after the model's inputs.

        Built once: a later call copies the library written before as long as that file is as it was written
        (a run exports one to measure its memory and another as its output); once anything else writes there
        (a board run exports every plan it times to one name) the next call builds again."""
        path = Path(path)
        if self._exported is not None and _file_identity(self._exported[0]) == self._exported[1]:
            written = self._exported[0]
            if path.resolve() != written.resolve():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(written, path)
            return path
        written = export_library(self.executable, self.target, path, self.weights)
        identity = _file_identity(written)
        self._exported = (written, identity) if identity else None
        return written

    def upload(self, session: "tvm.rpc.RPCSession", workdir: str | Path, name: str = "model.so") -> "RemoteModel":
        """Export the library as ``workdir/name``, upload it over an RPC ``session`` and load it on that board,
        with the weights copied there as tensors."""
        library = self.export(Path(workdir) / name)
        session.upload(str(library))
        device = session.cpu(0)
        return RemoteModel(relax.VirtualMachine(session.load_module(library.name), device), device, self.inputs,
                           [tvm.runtime.tensor(weight.numpy(), device) for weight in self.weights])

    def assembly(self) -> str:
        """The target's assembly of every compiled kernel of the model (to check which instructions it uses)."""
        return "\n".join(module.inspect_source("asm") for module in self.executable.mod.imports)


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is written again or replaced: its inode, size and modification time (None: no
    such file)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


class RemoteModel:
    """A built model loaded on a board over an RPC session: run and timed there, fed from here."""

    def __init__(self, vm: relax.VirtualMachine, device: object, inputs: Sequence[ModelInput],
                 weights: Sequence[tvm.runtime.Tensor] = ()):
        self.vm = vm
        self.device = device
        self.inputs = list(inputs)
        self.weights = list(weights)

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on the board; returns the model outputs in order."""
        return _flatten_outputs(self.vm["main"](*_arguments(self.inputs, feed, self.device), *self.weights))

    def time(self, feed: Mapping[str, np.ndarray], settings: SteadyState = SteadyState()) -> Timing:
        """Steady-state latency on the board (see :func:`tvm_dse.timing.steady_state`)."""
        return steady_state(tvm_sampler(self.vm, _arguments(self.inputs, feed, self.device) + self.weights,
                                        self.device), settings)


def _arguments(inputs: Sequence[ModelInput], feed: Mapping[str, np.ndarray], device: object) -> list:
    """The feed as the VM's arguments on ``device``, checked against the model's inputs."""
    names = [i.name for i in inputs]
    missing = [n for n in names if n not in feed]
    extra = [n for n in feed if n not in names]
    if missing or extra:
        raise TvmDseError(f"feed must name exactly the model inputs {names}; missing {missing}, unknown {extra}")
    arguments = []
    for model_input in inputs:
        array = np.ascontiguousarray(feed[model_input.name], dtype=model_input.dtype)
        if array.shape != model_input.shape:
            raise TvmDseError(f"input {model_input.name!r} has shape {array.shape}, "
                              f"the model was built for {model_input.shape}")
        arguments.append(tvm.runtime.tensor(array, device))
    return arguments


def _flatten_outputs(result: object) -> list[np.ndarray]:
    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    return [array for item in result for array in _flatten_outputs(item)]


def build_baseline(model: Model, target: TargetLike = "host") -> BuiltModel:
    """Compile ``model`` with TVM's default Relax pipeline for ``target`` (no schedules, no tvm_dse choices)."""
    dse_target = parse_target(target)
    executable = tvm.compile(model.mod, target=dse_target.tvm_target)
    return BuiltModel(executable, dse_target, model.inputs)
