"""Runners: time built candidates, and run and time whole built modules, where the target is, behind one
interface.

:class:`LocalRunner` measures on this machine, one candidate at a time. :class:`RPCRunner` measures on
boards reached through a TVM RPC tracker (every free board of the key, in parallel) or directly at
host:port. A board that stops answering within the session time-out is reported as a time-out naming
the board and the candidate; the candidate is retried on another board a bounded number of times and
then recorded as failed, and a board that keeps failing what other boards run is left out of the run.
Nothing here knows about stores: results go to the ``on_result`` callback as they arrive.
:func:`make_runner` picks the runner a user's ``rpc`` option names.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import TvmDseError
from ..target import DseTarget
from ..thread_pool import pool_key
from ..timing import (ATTEMPTS, MAX_OTHERS, MAX_SPREAD, SteadyState, Timing, Watch, least_disturbed,
                      watch_this_machine)
from .builder import BuildResult

# TVM's time evaluator hook that flushes the CPU caches before each repeat (all arguments but the output).
CACHE_FLUSH = "cache_flush_cpu_non_first_arg"
# Candidates in a row a board fails that another board then runs, after which the board is left out of the run
LOST_AFTER_FAILURES = 3
# Shortest kernel timing whose share of the machine taken by other work can be told (see _time_module)
WATCHABLE_S = 0.2


class MeasurementError(TvmDseError):
    """A measurement that cannot start: unreachable tracker, unknown key, no board free in time."""


@dataclass(frozen=True)
class MeasureSettings:
    """How each candidate is timed: ``repeat`` measurements, each the mean of ``number`` runs lasting at
    least ``min_repeat_ms``; ``warmup`` untimed runs first; ``cooldown_ms`` of rest between candidates
    (boards that throttle); optional cache flush before each repeat. A timing whose spread (interquartile
    range over median) exceeds ``max_spread``, or (on this machine, timed long enough to tell) during which
    other work took more than ``max_others`` of the machine, is taken again, ``attempts`` times at most;
    the best is kept, flagged as disturbed if it still is."""

    number: int = 10
    repeat: int = 5
    min_repeat_ms: int = 0
    warmup: int = 1
    cooldown_ms: int = 0
    flush_cache: bool = False
    attempts: int = ATTEMPTS
    max_spread: float = MAX_SPREAD
    max_others: float = MAX_OTHERS

    def __post_init__(self) -> None:
        for name, least in (("number", 1), ("repeat", 1), ("min_repeat_ms", 0), ("warmup", 0), ("cooldown_ms", 0),
                            ("attempts", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise TvmDseError(f"kernel timing setting {name} must be a whole number of at least {least}; "
                                  f"got {value!r}")
        for name in ("max_spread", "max_others"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise TvmDseError(f"kernel timing setting {name} must be a positive share; got {value!r}")


@dataclass
class ModelRun:
    """A whole module run where the target is: its outputs, its timing and the board ("local" on this
    machine, else the board's host:port)."""

    outputs: list[np.ndarray]
    timing: Timing
    board: str


@dataclass
class RunResult:
    """The timing of one built candidate, or why there is none."""

    build: BuildResult
    timing: Timing | None = None
    status: str = "ok"  # "ok", "run_error" or "timeout"
    error: str = ""
    board: str = "local"
    retried: bool = False  # a failed attempt; the candidate goes on to another board


def _random_arguments(build: BuildResult, device: object) -> list:
    import tvm

    rng = np.random.default_rng(0)
    dtypes = build.argument_dtypes or ["float32"] * len(build.argument_shapes)
    return [tvm.runtime.tensor(rng.standard_normal(shape).astype(dtype), device)
            for shape, dtype in zip(build.argument_shapes, dtypes)]


def _time_module(module: object, build: BuildResult, device: object, settings: MeasureSettings,
                 watch: Watch | None = None) -> tuple[Timing, bool]:
    """Time ``module``'s main on random arguments by ``settings``; ``watch`` (this machine's) sees other work.
    Returns the timing and whether it lasted long enough (:data:`WATCHABLE_S`) for ``watch`` to tell."""
    arguments = _random_arguments(build, device)
    for _ in range(settings.warmup):
        module["main"](*arguments)
    evaluator = module.time_evaluator("main", device, number=settings.number, repeat=settings.repeat,
                                      min_repeat_ms=settings.min_repeat_ms,
                                      f_preproc=CACHE_FLUSH if settings.flush_cache else "")
    watched = []

    def attempt() -> tuple[Timing, tuple[bool, ...]]:
        others = watch() if watch is not None else None
        began = time.perf_counter()
        timing = Timing.from_seconds(list(evaluator(*arguments).results), settings.number)
        # the kernel's clock ticks at 100 Hz: a shorter window cannot tell a tenth of the machine
        watched.append(others is not None and time.perf_counter() - began >= WATCHABLE_S)
        return timing, (watched[-1] and others() > settings.max_others,)

    timing, (busy,), runs = least_disturbed(attempt, settings.attempts, settings.max_spread)
    if settings.cooldown_ms:
        time.sleep(settings.cooldown_ms / 1e3)
    timing = replace(timing, runs=runs + settings.warmup, disturbed=busy or timing.spread > settings.max_spread)
    return timing, all(watched)


class Runner(ABC):
    """Times built candidates on the target."""

    # what it does to a kernel, for progress lines
    verb = "measuring"

    def __init__(self, settings: MeasureSettings | None = None):
        self.settings = settings or MeasureSettings()

    @abstractmethod
    def run(self, builds: Sequence[BuildResult],
            on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
        """Measure every successful build; return one result per build, in the builds' order.

        ``on_result`` is called as each result arrives (from the calling thread or a worker thread; it
        must be thread-safe), failed attempts that are retried included (``retried=True``), so they can
        be recorded. Builds that failed are not given to runners.
        """

    @abstractmethod
    def run_model(self, built: Any, feed: Mapping[str, np.ndarray], timing: SteadyState,
                  workdir: str | Path) -> ModelRun:
        """Run ``built`` (a :class:`tvm_dse.build.BuiltModel`: ``run``, ``time``, ``upload``) once on ``feed``
        and time it in steady state where the target is; ``workdir`` holds what has to be exported."""

    @property
    @abstractmethod
    def thread_pool(self) -> str:
        """The thread pool the kernels it times run on, part of their records' key (see
        :func:`~tvm_dse.thread_pool.pool_key`; "" where none shapes their time)."""

    def check(self) -> None:
        """Raise :class:`MeasurementError`, naming the cause, when the target cannot be reached: called
        before any work, so a run with everything already measured fails as early as one without."""

    def busy(self) -> str:
        """What keeps the target from being quiet now ("" when it is quiet), so that a kernel whose timings
        stayed disturbed is worth timing again (see :func:`~tvm_dse.measure.measure_candidates`). A runner
        that cannot watch its target's other work says so: those timings are then kept."""
        return "the target's other work cannot be watched from here"


class LocalRunner(Runner):
    """Measures on this machine, one candidate at a time (parallel runs would disturb each other).

    A kernel timed for less than :data:`WATCHABLE_S` is too short for the machine's CPU accounting to tell
    other work apart, so it is watched together with the kernels timed after it: their results are held
    until that window has lasted :data:`WATCHABLE_S` (the last window of a run is lengthened by timing its
    kernels again in turn). A window during which other work took more than ``max_others`` of the machine
    is timed again (``attempts`` windows in all); each of its kernels keeps its timing from the first quiet
    window, else its least spread one, flagged as disturbed."""

    @property
    def thread_pool(self) -> str:
        return pool_key(in_this_process=True)

    def busy(self) -> str:
        """How much of this machine other work took while it was watched for :data:`WATCHABLE_S`, where
        that is more than ``max_others`` ("" where it is not)."""
        others = watch_this_machine()
        time.sleep(WATCHABLE_S)
        share = others()
        return f"other work took {share:.0%} of this machine" if share > self.settings.max_others else ""

    def run(self, builds: Sequence[BuildResult],
            on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
        import tvm

        device = tvm.cpu(0)
        results: list[RunResult | None] = [None] * len(builds)
        window = _Window(self.settings, builds, device)

        def settle(index: int, result: RunResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(result)

        def close_window() -> None:
            for index, timing in window.checked().items():
                settle(index, RunResult(builds[index], timing))

        for index, build in enumerate(builds):
            since = _Opening()  # the window's opening, if this timing is the first it holds
            try:
                module = tvm.runtime.load_module(build.library)
                timing, watched = _time_module(module, build, device, self.settings, watch_this_machine)
            except Exception as error:  # TVM raises its own error types from the runtime
                settle(index, RunResult(build, status="run_error", error=f"{build.candidate.describe()} failed "
                                                                         f"on this machine: {error}"))
                continue
            if watched:
                settle(index, RunResult(build, timing))
            elif window.hold(index, module, timing, since):
                close_window()
        close_window()
        return results

    def run_model(self, built: Any, feed: Mapping[str, np.ndarray], timing: SteadyState,
                  workdir: str | Path) -> ModelRun:
        return ModelRun(built.run(feed), built.time(feed, timing), "local")


@dataclass(frozen=True)
class _Opening:
    """A moment on this machine: the wall clock, and a watch of other work from then on."""

    others: Callable[[], float] = field(default_factory=watch_this_machine)
    began: float = field(default_factory=time.perf_counter)

    def lasted(self) -> float:
        return time.perf_counter() - self.began


class _Window:
    """Kernel timings of a :class:`LocalRunner` too short to be watched alone, held and watched together."""

    def __init__(self, settings: MeasureSettings, builds: Sequence[BuildResult], device: object):
        self.settings, self.builds, self.device = settings, builds, device
        self.held: dict[int, tuple[Any, Timing]] = {}  # loaded module and timing, by build
        self.opening: _Opening | None = None  # set as the first timing is held

    def hold(self, index: int, module: Any, timing: Timing, since: _Opening) -> bool:
        """Hold a timing begun at ``since`` (the window opens there if empty); True once the window has
        lasted long enough to tell other work."""
        if not self.held:
            self.opening = since
        self.held[index] = (module, timing)
        return self.opening.lasted() >= WATCHABLE_S

    def checked(self) -> dict[int, Timing]:
        """The held timings, lengthened to :data:`WATCHABLE_S` if need be and timed again while other work
        was busy (``attempts`` windows in all), each kernel's best kept; the window is emptied."""
        if not self.held:
            return {}
        takes = self._lengthened({index: [timing] for index, (_, timing) in self.held.items()}, self.opening)
        windows = [(self.opening.others() > self.settings.max_others, takes)]
        while windows[-1][0] and len(windows) < self.settings.attempts:
            opening = _Opening()
            takes = self._lengthened({index: [] for index in self.held}, opening)
            windows.append((opening.others() > self.settings.max_others, takes))
        self.held = {}
        return {index: _best([(busy, timing) for busy, takes in windows for timing in takes[index]])
                for index in windows[0][1]}

    def _lengthened(self, takes: dict[int, list[Timing]], opening: _Opening) -> dict[int, list[Timing]]:
        """``takes`` with the held kernels timed again in turn until each has a timing and the window
        opened at ``opening`` has lasted :data:`WATCHABLE_S`."""
        once = replace(self.settings, attempts=1)
        while not all(takes.values()) or opening.lasted() < WATCHABLE_S:
            for index, (module, _) in self.held.items():
                takes[index].append(_time_module(module, self.builds[index], self.device, once)[0])
        return takes


def _best(takes: Sequence[tuple[bool, Timing]]) -> Timing:
    """The best of one kernel's timings, each with whether its window was busy: quiet before busy, then the
    least spread (the rule of :func:`tvm_dse.timing.least_disturbed`), with the runs of all counted."""
    busy, timing = min(takes, key=lambda take: (take[0], take[1].spread))
    return replace(timing, runs=sum(take.runs for _, take in takes), disturbed=timing.disturbed or busy)


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise MeasurementError(f"address {address!r} must be HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def boards_of_key(summary: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The boards of ``key`` in a tracker's summary (a board registers as "server:KEY")."""
    return [server for server in summary["server_info"] if server["key"].split(":")[-1] == key]


def _probe(host: str, port: int, what: str, timeout: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        raise MeasurementError(f"cannot reach the {what} at {host}:{port}: {error.strerror or error}") from None


class RPCRunner(Runner):
    """Measures on remote boards over TVM RPC.

    Parameters
    ----------
    tracker
        ``"HOST:PORT"`` of an RPC tracker; with ``key``, candidates are spread over every board the
        tracker has under that key, one session per board, in parallel.
    key
        The key the boards registered under (e.g. ``"qemu-aarch64"``, ``"rpi4"``).
    direct
        ``"HOST:PORT"`` of one RPC server to use without a tracker (instead of ``tracker`` and ``key``).
    session_timeout_s
        How long one candidate may take on a board before the session is dropped as timed out.
    attempts
        How many boards a candidate is tried on before it is recorded as failed.
    connect_timeout_s
        Bound on reaching the tracker or server, and on waiting for a free board.
    """

    def __init__(self, tracker: str | None = None, key: str | None = None, direct: str | None = None,
                 settings: MeasureSettings | None = None, session_timeout_s: float = 120.0, attempts: int = 3,
                 connect_timeout_s: float = 30.0):
        super().__init__(settings)
        if (tracker is None) == (direct is None):
            raise MeasurementError("give either a tracker (HOST:PORT) and a key, or a direct HOST:PORT")
        if tracker is not None and not key:
            raise MeasurementError(f"a key is needed to request boards from the tracker at {tracker}")
        self.tracker = parse_address(tracker) if tracker else None
        self.direct = parse_address(direct) if direct else None
        self.key = key or ""
        self.session_timeout_s = session_timeout_s
        self.attempts = attempts
        self.connect_timeout_s = connect_timeout_s

    @property
    def thread_pool(self) -> str:
        return pool_key(in_this_process=False)  # a board runs exported libraries

    def boards(self) -> list[str]:
        """host:port of every board the tracker has under the key; raises when there are none."""
        if self.direct:
            _probe(*self.direct, "RPC server", self.connect_timeout_s)
            return [f"{self.direct[0]}:{self.direct[1]}"]
        from tvm import rpc

        host, port = self.tracker
        _probe(host, port, "RPC tracker", self.connect_timeout_s)
        # a board re-registers after each session it served (seconds under emulation): give it the time
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            summary = rpc.connect_tracker(host, port).summary()
            servers = boards_of_key(summary, self.key)
            if servers:
                return [f"{s['addr'][0]}:{s['addr'][1]}" for s in servers]
            if time.monotonic() >= deadline:
                known = sorted({s["key"].split(":")[-1] for s in summary["server_info"]})
                raise MeasurementError(f"no board is registered under key {self.key!r} at the tracker {host}:{port}"
                                       f" (waited {self.connect_timeout_s:.0f} s); registered keys: "
                                       f"{', '.join(known) or 'none'}")
            time.sleep(1.0)

    def check(self) -> None:
        self.boards()

    def session(self) -> tuple[object, str]:
        """A session on one board and that board's host:port, within ``connect_timeout_s``."""
        from tvm import rpc
        from tvm.rpc import base

        if self.direct:
            host, port = self.direct
            return rpc.connect(host, port, session_timeout=self.session_timeout_s), f"{host}:{port}"
        outcome: dict = {}

        def request() -> None:
            # TrackerSession.request, keeping the board's address that it throws away
            try:
                tracker = rpc.connect_tracker(*self.tracker)
                base.sendjson(tracker._sock, [base.TrackerCode.REQUEST, self.key, "", 1])
                reply = base.recvjson(tracker._sock)
                if reply[0] != base.TrackerCode.SUCCESS:
                    raise MeasurementError(f"the tracker refused a board for key {self.key!r}: {reply}")
                url, port, match_key = reply[1]
                outcome["session"] = rpc.connect(url, port, match_key, self.session_timeout_s)
                outcome["board"] = f"{url}:{port}"
            except Exception as error:  # reported to the waiting thread
                outcome["error"] = error

        thread = threading.Thread(target=request, daemon=True)
        thread.start()
        thread.join(self.connect_timeout_s)
        if thread.is_alive():
            raise MeasurementError(f"no board of key {self.key!r} became free at the tracker "
                                   f"{self.tracker[0]}:{self.tracker[1]} within {self.connect_timeout_s:.0f} s: "
                                   f"{self._why_none_free()}")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["session"], outcome["board"]

    def _why_none_free(self) -> str:
        from tvm import rpc

        try:
            summary = rpc.connect_tracker(*self.tracker).summary()
        except Exception as error:  # the tracker itself went away
            return f"the tracker stopped answering ({error})"
        registered = len(boards_of_key(summary, self.key))
        if not registered:
            return "no board is registered under the key any more"
        return f"the key is busy: its {registered} board(s) are all in sessions of other clients"

    def run_model(self, built: Any, feed: Mapping[str, np.ndarray], timing: SteadyState,
                  workdir: str | Path) -> ModelRun:
        session, board = self.session()
        remote = built.upload(session, workdir)
        return ModelRun(remote.run(feed), remote.time(feed, timing), board)

    def _measure_on(self, session: object, build: BuildResult) -> Timing:
        session.upload(build.library)
        module = session.load_module(Path(build.library).name)
        return _time_module(module, build, session.cpu(0), self.settings)[0]

    def run(self, builds: Sequence[BuildResult],
            on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
        """One worker per board takes candidates from a shared queue; a failed attempt goes back to the queue
        for a board it has not failed on (while one is working). A board that fails ``LOST_AFTER_FAILURES``
        candidates in a row which then succeed on another board is lost: its session is held (the tracker
        hands it to no one else in this run) and the others go on."""
        if not builds:
            return []
        boards = self.boards()
        # (index, candidate, attempt, the boards it failed on)
        pending: deque[tuple[int, BuildResult, int, frozenset[str]]] = deque(
            (index, build, 1, frozenset()) for index, build in enumerate(builds))
        results: dict[int, RunResult] = {}
        lock = threading.Lock()
        working: dict[int, str] = {}  # worker -> the board it holds a session on ("" while it has none)
        faults: dict[str, int] = {}  # board -> candidates in a row it failed that another board then ran
        lost: list[str] = []
        held: list[object] = []  # sessions on lost boards, kept until the end of the run

        def finish(index: int, result: RunResult) -> None:
            with lock:
                results[index] = result
            if on_result is not None:
                on_result(result)

        def take(worker: int, board: str) -> tuple[int, BuildResult, int, frozenset[str]] | None:
            """The next candidate for ``board``: one it has not failed on, else one every working board failed."""
            while True:
                with lock:
                    if not pending:
                        return None
                    others = {b for w, b in working.items() if w != worker and b and b not in lost}
                    for position, item in enumerate(pending):
                        if board not in item[3] or others <= item[3]:
                            del pending[position]
                            return item
                time.sleep(0.2)  # another board will take what this one failed

        def succeeded(board: str, failed_on: frozenset[str]) -> None:
            with lock:
                faults[board] = 0
                for other in failed_on - {board}:
                    faults[other] = faults.get(other, 0) + 1
                    if faults[other] == LOST_AFTER_FAILURES and other not in lost:
                        lost.append(other)
                        print(f"board {other} failed {LOST_AFTER_FAILURES} candidates in a row that other boards "
                              "ran: it is left out of the rest of this run", file=sys.stderr, flush=True)

        def worker(number: int) -> None:
            session, board = None, ""
            try:
                while True:
                    if session is not None and board in lost:
                        held.append(session)
                        return
                    item = take(number, board)
                    if item is None:
                        return
                    index, build, attempt, failed_on = item
                    if session is None:
                        try:
                            session, board = self.session()
                        except Exception as error:
                            with lock:
                                pending.appendleft(item)
                                last = len(working) == 1
                            if last:  # no other worker will pick the queue up: fail what is left
                                self._fail_remaining(pending, finish, f"no board available: {error}")
                            return
                        with lock:
                            working[number] = board
                    try:
                        timing = self._measure_on(session, build)
                    except Exception as error:  # the session is gone: time-out, dead board, remote error
                        status, message = self._describe_failure(error, board, build)
                        session = None
                        failure = RunResult(build, status=status, board=board, retried=attempt < self.attempts,
                                            error=f"{message} (attempt {attempt} of {self.attempts})")
                        if failure.retried:
                            if on_result is not None:
                                on_result(failure)
                            with lock:
                                pending.append((index, build, attempt + 1, failed_on | {board}))
                        else:
                            finish(index, failure)
                        continue
                    succeeded(board, failed_on)
                    finish(index, RunResult(build, timing, board=board))
            finally:
                with lock:
                    working.pop(number, None)

        with lock:
            working.update({number: "" for number in range(len(boards))})
        threads = [threading.Thread(target=worker, args=(number,), daemon=True) for number in range(len(boards))]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                # in short waits: Ctrl-C's signal may land on a worker thread, and Python raises it in this
                # one only when this one runs again
                while thread.is_alive():
                    thread.join(0.2)
        except BaseException:  # Ctrl-C: no other candidate starts; those on the boards finish and are recorded
            with lock:
                pending.clear()
            raise
        held.clear()  # the lost boards' sessions end here
        reason = "no board was left to measure it" + (f" ({', '.join(lost)} lost)" if lost else "")
        self._fail_remaining(pending, finish, reason)
        return [results[i] for i in range(len(builds))]

    def _describe_failure(self, error: Exception, board: str, build: BuildResult) -> tuple[str, str]:
        text = str(error).strip().splitlines()
        summary = text[-1] if text else type(error).__name__
        timed_out = any(word in str(error).lower() for word in ("timeout", "timed out", "shutdown", "closed", "reset",
                                                                "broken pipe", "connection"))
        if timed_out:
            return "timeout", (f"board {board} timed out or dropped the session (limit {self.session_timeout_s:.0f} s) "
                               f"while measuring {build.candidate.describe()}: {summary}")
        return "run_error", f"board {board} failed to run {build.candidate.describe()}: {summary}"

    @staticmethod
    def _fail_remaining(pending: deque, finish: Callable[[int, RunResult], None], reason: str) -> None:
        """Record every candidate left in ``pending`` as failed for ``reason`` (the caller holds no lock)."""
        while pending:
            index, build, *_ = pending.popleft()
            finish(index, RunResult(build, status="run_error", error=f"{build.candidate.describe()}: {reason}"))


def make_runner(target: DseTarget, rpc: str | Mapping[str, str] | None, settings: MeasureSettings) -> Runner:
    """A local runner for host targets, or an RPC runner from ``rpc``: ``"tracker=HOST:PORT,key=KEY"``,
    ``{"tracker": "HOST:PORT", "key": KEY}``, or a direct ``"HOST:PORT"``."""
    if rpc is None:
        if not target.runs_on_host:
            raise TvmDseError(f"target {target.key} does not run on this machine: give rpc= a tracker and key "
                              "(or a direct host:port) of a board")
        return LocalRunner(settings)
    if isinstance(rpc, str):
        if "=" in rpc:
            rpc = dict(part.split("=", 1) for part in rpc.split(","))
        else:
            return RPCRunner(direct=rpc, settings=settings)
    unknown = set(rpc) - {"tracker", "key", "direct"}
    if unknown:
        raise TvmDseError(f"unknown rpc settings {sorted(unknown)}; accepted: tracker, key, direct")
    return RPCRunner(tracker=rpc.get("tracker"), key=rpc.get("key"), direct=rpc.get("direct"), settings=settings)
