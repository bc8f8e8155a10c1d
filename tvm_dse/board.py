"""The emulated aarch64 board: a TVM RPC tracker and N aarch64 RPC servers (real aarch64 Python and TVM
runtime under qemu user-mode emulation) on 127.0.0.1.

``scripts/setup_board.sh`` installs the board once per machine; :func:`start_cluster` starts a tracker
and boards and :meth:`BoardCluster.stop` stops exactly the processes it started, by their process ids.
:func:`supervise` keeps the boards serving: a board whose process exited, or that stopped serving (TVM's
RPC server can stop after a client is killed mid-session: it is then no longer registered with the
tracker), is started again on its port and registers again (``tvm-dse board up`` runs it in a process of
its own).
Timings under emulation say nothing about real Arm speed: use the board for the correctness of the
remote path (cross-compile, upload, run, faults), never for speed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import TvmDseError
from .measure.runner import boards_of_key

DEFAULT_KEY = "qemu-aarch64"
LOOPBACK = "127.0.0.1"
SETUP_SCRIPT = "scripts/setup_board.sh"
# How long a started board may take to register with the tracker (Python and TVM start under emulation)
REGISTER_TIMEOUT_S = 240.0
# How long a board that had registered may stay unregistered, its process alive, before it counts as no
# longer serving (a board re-registers within a second of each session)
UNREGISTERED_LIMIT_S = 30.0
SUPERVISE_PERIOD_S = 2.0


def board_dir() -> Path:
    """Where ``scripts/setup_board.sh`` installs the board ($TVM_DSE_BOARD_DIR or ~/.cache/tvm_dse/board-aarch64)."""
    return Path(os.environ.get("TVM_DSE_BOARD_DIR", Path.home() / ".cache" / "tvm_dse" / "board-aarch64"))


def board_python() -> Path:
    """The board's Python launcher; raises when the board has not been set up."""
    launcher = board_dir() / "python"
    if not (board_dir() / ".complete").is_file() or not launcher.is_file():
        raise TvmDseError(f"the emulated aarch64 board is not set up in {board_dir()}; run {SETUP_SCRIPT} "
                          "(needs root for apt-get) from the tvm_dse repository")
    return launcher


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TvmDseError(f"process {process.pid} exited with {process.returncode} before listening on {port}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise TvmDseError(f"nothing listens on {LOOPBACK}:{port} after {timeout:.0f} s")


@dataclass
class ServiceProcess:
    """One process of the cluster: what it is, its pid (the leader of its own process group), its port."""

    role: str
    pid: int
    port: int
    log: str

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return _state(self.pid) not in ("Z", "X")

    def kill(self, sig: int = signal.SIGTERM) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


@dataclass
class BoardCluster:
    """A tracker and its emulated boards, all on 127.0.0.1."""

    tracker_port: int
    key: str
    tracker: ServiceProcess
    boards: list[ServiceProcess] = field(default_factory=list)
    host: str = LOOPBACK
    supervisor: ServiceProcess | None = None
    restarts: int = 0

    @property
    def tracker_address(self) -> str:
        return f"{self.host}:{self.tracker_port}"

    def registered(self) -> int:
        """How many boards of this cluster's key the tracker knows now."""
        return len(self.registered_ports())

    def registered_ports(self) -> list[int]:
        """The ports of the boards of this cluster's key the tracker knows now."""
        from tvm import rpc

        summary = rpc.connect_tracker(self.host, self.tracker_port).summary()
        return [server["addr"][1] for server in boards_of_key(summary, self.key)]

    def wait_registered(self, count: int | None = None, timeout: float = REGISTER_TIMEOUT_S) -> None:
        """Block until ``count`` boards (default: all live ones) have registered with the tracker."""
        count = sum(b.alive() for b in self.boards) if count is None else count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.registered() >= count:
                return
            dead = [b for b in self.boards if not b.alive()]
            if count > len(self.boards) - len(dead):
                raise TvmDseError(f"board processes {[b.pid for b in dead]} exited; see {[b.log for b in dead]}")
            time.sleep(1.0)
        raise TvmDseError(f"only {self.registered()} of {count} boards registered with the tracker at "
                          f"{self.tracker_address} after {timeout:.0f} s; see {[b.log for b in self.boards]}")

    def free(self) -> int:
        """How many boards of this cluster's key the tracker can hand out now (registered and not in a session)."""
        from tvm import rpc

        summary = rpc.connect_tracker(self.host, self.tracker_port).summary()
        return summary["queue_info"].get(self.key, {}).get("free", 0)

    def wait_free(self, count: int | None = None, timeout: float = 120.0) -> None:
        """Block until ``count`` boards (default: all live ones) are free: a session a client has not yet
        released (an RPC session ends when its last remote object is collected) keeps its board busy."""
        count = sum(b.alive() for b in self.boards) if count is None else count
        deadline = time.monotonic() + timeout
        while self.free() < count:
            if time.monotonic() >= deadline:
                raise TvmDseError(f"only {self.free()} of {count} boards free at the tracker {self.tracker_address} "
                                  f"after {timeout:.0f} s; see {[b.log for b in self.boards]}")
            time.sleep(0.5)

    def add_board(self, port: int | None = None, log_dir: Path | None = None) -> ServiceProcess:
        """Start one more board registered under this cluster's key."""
        board = start_board(port, log_dir, tracker=self.tracker_address, key=self.key)
        self.boards.append(board)
        return board

    def stop_supervisor(self, timeout: float = 10.0) -> None:
        """Stop the supervisor (it finishes a restart it began, and records it, first)."""
        if self.supervisor is None:
            return
        self.supervisor.kill(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.supervisor.alive():
            time.sleep(0.1)
        self.supervisor.kill(signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every process this cluster started (and their children), by process group: the supervisor
        first, so that it restarts nothing."""
        self.stop_supervisor(timeout)
        processes = [*self.boards, self.tracker]
        for process in processes:
            process.kill(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(p.alive() for p in processes):
            time.sleep(0.2)
        for process in processes:
            if process.alive():
                process.kill(signal.SIGKILL)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BoardCluster":
        supervisor = data.get("supervisor")
        return cls(data["tracker_port"], data["key"], ServiceProcess(**data["tracker"]),
                   [ServiceProcess(**b) for b in data["boards"]], data.get("host", LOOPBACK),
                   ServiceProcess(**supervisor) if supervisor else None, data.get("restarts", 0))


def supervise(cluster: BoardCluster, stop: threading.Event | None = None,
              on_restart: Callable[[ServiceProcess, ServiceProcess, str], None] | None = None,
              unregistered_limit_s: float = UNREGISTERED_LIMIT_S, register_timeout_s: float = REGISTER_TIMEOUT_S,
              period_s: float = SUPERVISE_PERIOD_S) -> None:
    """Keep ``cluster``'s boards serving until its tracker stops or ``stop`` is set.

    Every ``period_s``, a board whose process exited, or that has not been registered with the tracker for
    ``unregistered_limit_s`` while its process lives (``register_timeout_s`` after its start), is killed
    with its process group and started again on its port under the cluster's key; ``cluster.boards`` and
    ``cluster.restarts`` are updated and ``on_restart(old, new, why)`` is called.
    """
    stop = stop or threading.Event()
    started = {board.port: time.monotonic() for board in cluster.boards}
    seen: dict[int, float] = {}
    while not stop.wait(period_s) and cluster.tracker.alive():
        try:
            registered = set(cluster.registered_ports())
        except Exception:  # the tracker is stopping or too busy to answer: ask again next period
            continue
        now = time.monotonic()
        for index, board in enumerate(cluster.boards):
            if board.port in registered:
                seen[board.port] = now
                continue
            if not board.alive():
                why = "its process exited"
            elif board.port in seen and now - seen[board.port] >= unregistered_limit_s:
                why = f"it stopped serving (not registered with the tracker for {unregistered_limit_s:.0f} s)"
            elif board.port not in seen and now - started[board.port] >= register_timeout_s:
                why = f"it did not register with the tracker within {register_timeout_s:.0f} s of its start"
            else:
                continue
            board.kill(signal.SIGKILL)
            replacement = start_board(board.port, Path(board.log).parent, cluster.tracker_address, cluster.key)
            cluster.boards[index] = replacement
            cluster.restarts += 1
            started[board.port] = now
            seen.pop(board.port, None)
            if on_restart is not None:
                on_restart(board, replacement, why)


def start_board(port: int | None = None, log_dir: Path | None = None, tracker: str | None = None,
                key: str = DEFAULT_KEY) -> ServiceProcess:
    """Start one emulated board on 127.0.0.1:``port``, registered with ``tracker`` when given (a board
    without a tracker is reached directly at its port). Stop it with ``.kill()``."""
    port = port or free_port()
    log = _log_path(log_dir, f"board-{port}")
    command = [str(board_python()), "-m", "tvm.exec.rpc_server", "--host", LOOPBACK, "--port", str(port),
               "--port-end", str(port + 1), "--load-library",
               str(board_dir() / "site" / "tvm" / "lib" / "libtvm_runtime_extra.so")]
    if tracker:
        command += ["--tracker", tracker, "--key", key]
    return ServiceProcess("board", _spawn(command, log).pid, port, str(log))


def _log_path(log_dir: Path | None, name: str) -> Path:
    directory = Path(log_dir) if log_dir else board_dir() / "logs"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.log"


def _spawn(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as stream:
        # its own session: the cluster stops it and the workers it forks as one process group
        return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def start_cluster(boards: int = 1, tracker_port: int | None = None, key: str = DEFAULT_KEY,
                  log_dir: str | Path | None = None, wait: bool = True,
                  timeout: float = REGISTER_TIMEOUT_S) -> BoardCluster:
    """Start a tracker on 127.0.0.1 and ``boards`` emulated aarch64 boards registered under ``key``.

    Returns once every board has registered (unless ``wait`` is False). The caller stops the cluster with
    :meth:`BoardCluster.stop`; on failure to start, whatever was started is stopped.
    """
    board_python()  # fail before starting anything when the board is not set up
    tracker_port = tracker_port or free_port()
    log_dir = Path(log_dir) if log_dir else None
    log = _log_path(log_dir, f"tracker-{tracker_port}")
    command = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", LOOPBACK, "--port", str(tracker_port),
               "--port-end", str(tracker_port + 1)]
    process = _spawn(command, log)
    cluster = BoardCluster(tracker_port, key, ServiceProcess("tracker", process.pid, tracker_port, str(log)))
    try:
        wait_for_port(tracker_port, timeout=60, process=process)
        for _ in range(boards):
            cluster.add_board(log_dir=log_dir)
        if wait:
            cluster.wait_registered(boards, timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def state_file() -> Path:
    """Where ``tvm-dse board up`` records the cluster it started, for ``tvm-dse board down``."""
    return board_dir() / "cluster.json"


def save_cluster(cluster: BoardCluster) -> None:
    """Record ``cluster`` in :func:`state_file` (whole: a reader never sees half of it)."""
    partial = state_file().with_name(state_file().name + ".partial")
    partial.write_text(json.dumps(cluster.to_dict(), indent=1))
    partial.replace(state_file())


def start_supervisor(cluster: BoardCluster) -> ServiceProcess:
    """Start ``tvm-dse board supervise`` for the cluster recorded in :func:`state_file` (see :func:`supervise`)."""
    log = Path(cluster.tracker.log).with_name(f"supervisor-{cluster.tracker_port}.log")
    command = [sys.executable, "-m", "tvm_dse.cli", "board", "supervise"]
    return ServiceProcess("supervisor", _spawn(command, log).pid, 0, str(log))


def load_cluster() -> BoardCluster | None:
    path = state_file()
    return BoardCluster.from_dict(json.loads(path.read_text())) if path.is_file() else None
