"""pytest fixtures for projects testing against tvm_dse's emulated aarch64 board.

Enable with ``pytest_plugins = ["tvm_dse.testing.pytest_plugin"]`` in a conftest.py.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from ..board import BoardCluster, start_cluster


@pytest.fixture(scope="session")
def emulated_boards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoardCluster]:
    """A tracker and two emulated aarch64 boards on 127.0.0.1, shared by the session; stopped at its end."""
    cluster = start_cluster(boards=2, log_dir=tmp_path_factory.mktemp("boards"))
    yield cluster
    cluster.stop()


@pytest.fixture
def board_cluster_factory(tmp_path: object) -> Iterator[Callable[..., BoardCluster]]:
    """Start private clusters (e.g. for tests that kill boards); every one is stopped after the test."""
    started: list[BoardCluster] = []

    def start(boards: int = 1, **options: object) -> BoardCluster:
        cluster = start_cluster(boards=boards, log_dir=options.pop("log_dir", tmp_path), **options)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
