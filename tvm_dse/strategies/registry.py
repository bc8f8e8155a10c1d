"""The strategy registry: every implementation tvm_dse can choose, by stable name."""

from __future__ import annotations

from ..target import DseTarget
from ..workload import Workload
from .base import Strategy

_REGISTRY: dict[str, Strategy] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator adding one instance of ``cls`` to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"strategy name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def all_strategies() -> list[Strategy]:
    """Every registered strategy, in registration order."""
    return list(_REGISTRY.values())


def applicable_strategies(workload: Workload, target: DseTarget) -> list[Strategy]:
    """The strategies that apply to ``workload`` on ``target``."""
    return [s for s in _REGISTRY.values() if s.applies(workload, target)]
