"""Shared fixtures: zoo models are built once per test session."""

import functools

import onnx
import pytest

from tvm_dse.testing import build_model


@functools.lru_cache(maxsize=None)
def _zoo(name: str, small: bool) -> onnx.ModelProto:
    return build_model(name, small=small)


@pytest.fixture(scope="session")
def zoo():
    """``zoo(name, small=True)``: a zoo ONNX model, built once per session (treat it as read-only)."""
    return lambda name, small=True: _zoo(name, small)
