"""Layout conversions as measurement candidates: a :class:`Conversion` is one activation layout conversion,
measured like a kernel so the search can price the edges between neighbours that disagree on a layout;
:func:`build_conversion` (registered for the kind ``"conversion"`` when this module is imported) builds it
as a lowered model schedules it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .layouts import Layout
from .lower import build_layout_transform
from .measure import CONVERSION_PREFIX, BuildOutput, measurement_key, register_build_function
from .target import DseTarget


@dataclass(frozen=True)
class Conversion:
    """Converting an activation of logical NCHW shape ``shape`` from ``source`` to ``destination`` layout
    (an fp32 one to 8-bit codes where the destination is a ``_u8`` layout: measured with placeholder
    quantization values, which do not change its speed)."""

    kind: ClassVar[str] = "conversion"
    schedule_version: ClassVar[int] = 1

    shape: tuple[int, ...]
    source: str
    destination: str

    @property
    def strategy(self) -> str:
        return f"{CONVERSION_PREFIX}{self.source}_to_{self.destination}"

    @property
    def decisions(self) -> dict[str, Any]:
        return {}

    @property
    def workload_key(self) -> str:
        return "tensor_" + "x".join(map(str, self.shape)) + "_float32"

    def workload_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def describe(self) -> str:
        return f"conversion {self.source}->{self.destination} of {'x'.join(map(str, self.shape))}"

    def spec(self) -> dict[str, Any]:
        """What :func:`build_conversion` needs to build it in a builder worker (plain data)."""
        return {"shape": list(self.shape), "source": self.source, "destination": self.destination}

    def resolved(self, target: DseTarget) -> "Conversion":
        return self

    def key(self, target: DseTarget, thread_pool: str) -> str:
        return measurement_key(target.key, self.workload_key, self.strategy, self.schedule_version, {}, thread_pool)


def build_conversion(spec: dict[str, Any], target: DseTarget) -> BuildOutput:
    """Build a :class:`Conversion` from its ``spec()``: the activation in, the converted one out."""
    shape = tuple(spec["shape"])
    built = build_layout_transform(shape, spec["source"], spec["destination"], target)
    layouts = [Layout.parse(spec["source"]), Layout.parse(spec["destination"])]
    return BuildOutput(built.executable, [list(layout.shape(shape)) for layout in layouts],
                       [layout.dtype for layout in layouts])


register_build_function(Conversion.kind, build_conversion)
