"""Shared fixtures: zoo and matrix models are built once per test session."""

import functools

import onnx
import pytest

from tvm_dse import build_graph, load_model
from tvm_dse.testing import build_model
from tvm_dse.testing.matrix import matrix_model


@functools.lru_cache(maxsize=None)
def _zoo(name: str, small: bool) -> onnx.ModelProto:
    return build_model(name, small=small)


@pytest.fixture(scope="session")
def zoo():
    """``zoo(name, small=True)``: a zoo ONNX model, built once per session (treat it as read-only)."""
    return lambda name, small=True: _zoo(name, small)


@functools.lru_cache(maxsize=None)
def _imported_matrix_model(name: str):
    model = load_model(matrix_model(name))
    return model, build_graph(model)


@pytest.fixture(scope="session")
def matrix_models():
    """``matrix_models(name)``: a target-matrix model imported, with its DSE graph, once per session
    (treat both as read-only)."""
    return _imported_matrix_model
