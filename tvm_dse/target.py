"""Targets: what users write, turned into a TVM target plus the facts strategies need.

Users write targets the way TVM tutorials taught them for years (``"llvm -mtriple=aarch64-linux-gnu
-mattr=+neon -mcpu=cortex-a72 -num-cores=4"``), but TVM 0.27 accepts only dicts. :func:`parse_target`
takes a legacy string, a dict, a preset name (``"host"``, ``"rpi4"``, ...), a ``tvm.target.Target``
or a :class:`DseTarget`, and returns a :class:`DseTarget`: the TVM target and what later stages ask of
it (vector width, aarch64 or not, dot-product and fp16 support, core count, a canonical key).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import Any, Mapping, Union

import tvm
from tvm.target import codegen

from .errors import TargetError

SUPPORTED_KINDS = ("llvm",)

# Options of the llvm kind that describe how TVM wires targets together, not the CPU: users never set them.
_INTERNAL_OPTIONS = frozenset({"kind", "tag", "host", "from_device", "target_device_type"})


@dataclass(frozen=True)
class Preset:
    """A named board or CPU: its description, the TVM target options that describe it and, for the cost
    model of boards that are not at hand (:mod:`tvm_dse.core_model`), its cores' clock, the memory
    bandwidth its cores share (a sustained copy's, typical of such boards: not a peak figure) and the size
    of its last-level cache."""

    name: str
    description: str
    options: Mapping[str, Any]
    clock_ghz: float | None = None
    bandwidth_gbs: float | None = None
    cache_mb: float | None = None


def _aarch64(mcpu: str, mattr: tuple[str, ...], cores: int) -> dict[str, Any]:
    return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": mcpu, "mattr": list(mattr),
            "num-cores": cores}


_NEON = ("+neon",)
# Armv8.2 cores: dot product (sdot/udot) and fp16 arithmetic.
_NEON_V82 = ("+neon", "+dotprod", "+fullfp16")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("rpi4", "Raspberry Pi 4: 4x Cortex-A72, NEON", _aarch64("cortex-a72", _NEON, 4), 1.8, 4.0, 1.0),
        Preset("rpi3", "Raspberry Pi 3: 4x Cortex-A53, NEON", _aarch64("cortex-a53", _NEON, 4), 1.2, 2.0, 0.5),
        Preset("rpi5", "Raspberry Pi 5: 4x Cortex-A76, NEON, dotprod, fp16", _aarch64("cortex-a76", _NEON_V82, 4),
               2.4, 9.0, 2.0),
        # the cores by name: clock and bandwidth of a typical board with four of them
        Preset("cortex-a72", "Cortex-A72 (4 cores), NEON", _aarch64("cortex-a72", _NEON, 4), 1.8, 4.0, 1.0),
        Preset("cortex-a53", "Cortex-A53 (4 cores), NEON", _aarch64("cortex-a53", _NEON, 4), 1.4, 2.0, 0.5),
        Preset("cortex-a76", "Cortex-A76 (4 cores), NEON, dotprod, fp16", _aarch64("cortex-a76", _NEON_V82, 4),
               2.4, 9.0, 2.0),
        Preset("cortex-a55", "Cortex-A55 (4 cores), NEON, dotprod, fp16", _aarch64("cortex-a55", _NEON_V82, 4),
               1.8, 4.0, 0.5),
    )
}
PRESET_ALIASES = {"raspberry-pi-4": "rpi4", "raspberry-pi-3": "rpi3", "raspberry-pi-5": "rpi5"}
HOST_PRESET = "host"


def preset_names() -> list[str]:
    """Every name :func:`parse_target` accepts as a preset, ``"host"`` first."""
    return [HOST_PRESET, *PRESETS, *PRESET_ALIASES]


def physical_cores() -> int:
    """Physical cores of this machine (hyper-threads share their core's vector units)."""
    import psutil

    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def host_options() -> dict[str, Any]:
    """TVM target options for the machine this process runs on (its CPU model and physical cores)."""
    return {"kind": "llvm", "mtriple": codegen.llvm_get_system_triple(), "mcpu": codegen.llvm_get_system_cpu(),
            "num-cores": physical_cores()}


def _llvm_options() -> dict[str, str]:
    """User-settable options of TVM's llvm target kind, with their TVM type names."""
    options = tvm.target.TargetKind.options_from_name("llvm")
    return {name: str(kind) for name, kind in options.items() if name not in _INTERNAL_OPTIONS}


def _unknown_option(name: str, where: str) -> TargetError:
    accepted = ", ".join(sorted(_llvm_options()))
    return TargetError(f"unknown target option {name!r} in {where}; accepted options: {accepted}")


def _convert_option(name: str, value: Any, where: str) -> Any:
    """Convert a string (or flag) value to the type TVM expects for option ``name``."""
    type_name = _llvm_options()[name]
    if type_name.startswith("Array"):
        if isinstance(value, str):
            return [item for item in value.split(",") if item]
        if isinstance(value, (list, tuple)):
            return [str(item) for item in value]
    elif type_name == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise TargetError(f"target option {name!r} in {where} needs an integer, got {value!r}") from None
    elif type_name == "bool":
        if value is None or value is True or str(value).lower() in ("1", "true"):
            return True
        if value is False or str(value).lower() in ("0", "false"):
            return False
    elif isinstance(value, str):
        return value
    raise TargetError(f"target option {name!r} in {where} needs a {type_name}, got {value!r}")


def _canonical_option_name(name: str, where: str) -> str:
    options = _llvm_options()
    if name in options:
        return name
    if name.replace("_", "-") in options:
        return name.replace("_", "-")
    raise _unknown_option(name, where)


def _parse_cli_string(text: str) -> dict[str, Any]:
    """Translate a legacy ``"llvm -name=value ..."`` string into a target dict."""
    tokens = shlex.split(text)
    kind = tokens[0]
    if kind not in SUPPORTED_KINDS:
        raise TargetError(f"unsupported target kind {kind!r} in {text!r}; tvm_dse targets CPUs through: "
                          f"{', '.join(SUPPORTED_KINDS)}; or use a preset: {', '.join(preset_names())}")
    options: dict[str, Any] = {"kind": kind}
    position = 1
    while position < len(tokens):
        token = tokens[position]
        if not token.startswith("-") or token in ("-", "--"):
            raise TargetError(f"unexpected {token!r} in target string {text!r}: options are written -name=value")
        name, has_value, value = token.lstrip("-").partition("=")
        if not has_value:
            following = tokens[position + 1] if position + 1 < len(tokens) else None
            if following is not None and not following.startswith("-"):
                value, position = following, position + 1
            else:
                value = None  # a bare flag such as -fast-math
        name = _canonical_option_name(name, repr(text))
        options[name] = _convert_option(name, value, repr(text))
        position += 1
    return options


def _validate_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    where = repr(dict(config))
    options: dict[str, Any] = {}
    for name, value in config.items():
        if name == "kind":
            if value not in SUPPORTED_KINDS:
                raise TargetError(f"unsupported target kind {value!r} in {where}; accepted: {', '.join(SUPPORTED_KINDS)}")
            options["kind"] = value
            continue
        if name.startswith("feature."):
            continue  # derived by TVM from mtriple/mcpu/mattr; exported targets carry them
        if name in ("tag", "keys") and not value:
            continue
        name = _canonical_option_name(name, where)
        options[name] = _convert_option(name, _plain(value), where)
    options.setdefault("kind", "llvm")
    return options


def _resolve_preset(name: str) -> tuple[str, dict[str, Any]]:
    name = PRESET_ALIASES.get(name, name)
    if name == HOST_PRESET:
        return name, host_options()
    if name in PRESETS:
        return name, dict(PRESETS[name].options)
    raise TargetError(f"unknown target preset {name!r}; presets: {', '.join(preset_names())}; "
                      "or write a TVM target such as 'llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72'")


def _normalize(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Fill in defaults and check the CPU name against LLVM before TVM sees the options."""
    options = dict(options)
    triple = options.get("mtriple")
    if triple in ("aarch64", "arm64"):
        options["mtriple"] = "aarch64-linux-gnu"  # the boards tvm_dse deploys to run Linux
    triple = options.get("mtriple") or codegen.llvm_get_system_triple()
    for attr in options.get("mattr", []):
        if not attr.startswith(("+", "-")):
            raise TargetError(f"target attribute {attr!r} in {where} must start with '+' or '-', e.g. '+neon'")
    mcpu = options.get("mcpu")
    if mcpu and not codegen.llvm_is_valid_cpu(mcpu, triple):
        known = codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple}))
        raise TargetError(f"unknown mcpu {mcpu!r} for triple {triple!r} in {where}; LLVM knows: {', '.join(known)}")
    return options


TargetLike = Union[str, Mapping[str, Any], "tvm.target.Target", "DseTarget"]


class DseTarget:
    """A TVM CPU target together with the facts tvm_dse's strategies and runners need.

    Build one with :func:`parse_target`. Two targets are equal when their TVM options are.
    """

    def __init__(self, tvm_target: tvm.target.Target, preset: str | None = None):
        self.tvm_target = tvm_target
        self.preset = preset
        self._config = {key: _plain(value) for key, value in dict(tvm_target.export()).items()}

    @property
    def options(self) -> dict[str, Any]:
        """The user-settable TVM options of this target (a JSON-able dict that :func:`parse_target` accepts)."""
        return {key: value for key, value in self._config.items()
                if key == "kind" or (key in _llvm_options() and key != "keys" and value not in ("", []))}

    @property
    def triple(self) -> str:
        return self._config.get("mtriple") or codegen.llvm_get_system_triple()

    @property
    def arch(self) -> str:
        """The CPU architecture of the triple, e.g. ``"aarch64"`` or ``"x86_64"``."""
        return self.triple.split("-")[0]

    @property
    def mcpu(self) -> str | None:
        return self._config.get("mcpu") or None

    @property
    def mattr(self) -> tuple[str, ...]:
        return tuple(self._config.get("mattr", ()))

    @property
    def num_cores(self) -> int | None:
        """Cores the deployed model may use, when the target says (``-num-cores``)."""
        cores = self._config.get("num-cores")
        return int(cores) if cores else None

    @property
    def is_aarch64(self) -> bool:
        return self.arch == "aarch64"

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "i686", "i386")

    @property
    def cpu_features(self) -> frozenset[str]:
        """The LLVM features enabled for this CPU (mcpu plus mattr), e.g. ``{"avx2", "fma", ...}``."""
        return frozenset(str(f) for f in codegen.llvm_get_cpu_features(self.tvm_target))

    @property
    def vector_bits(self) -> int:
        """Width of the widest fp32 SIMD register the target may use (128 for NEON, 256 AVX2, 512 AVX-512)."""
        features = self.cpu_features
        if self.is_x86:
            if "avx512f" in features:
                return 512
            if "avx" in features:
                return 256
            return 128
        if self.is_aarch64:
            return 128  # NEON; SVE lengths are implementation-defined and not used by tvm_dse's kernels
        return 128

    @property
    def fp32_lanes(self) -> int:
        return self.vector_bits // 32

    @property
    def has_dotprod(self) -> bool:
        """int8 dot-product instructions: Arm sdot/udot or x86 AVX-512 VNNI."""
        if self.is_aarch64:
            return bool(self._config.get("feature.has_dotprod"))
        return "avx512vnni" in self.cpu_features

    @property
    def has_fp16(self) -> bool:
        """fp16 arithmetic in SIMD registers (Armv8.2 fullfp16, x86 AVX-512 FP16); else fp16 is storage only."""
        if self.is_aarch64:
            return bool(self._config.get("feature.has_fp16_simd"))
        return "avx512fp16" in self.cpu_features

    @property
    def family(self) -> str:
        """The target family default schedules are chosen for: ``x86-avx512``, ``x86-avx2``, ``arm-neon`` or ``generic``."""
        if self.is_x86:
            return {512: "x86-avx512", 256: "x86-avx2"}.get(self.vector_bits, "generic")
        if self.is_aarch64:
            return "arm-neon"
        return "generic"

    @property
    def runs_on_host(self) -> bool:
        """Whether code built for this target runs in this process (same CPU architecture)."""
        needed = {f for f in self.cpu_features if f.startswith(_INSTRUCTION_SET_FEATURES)}
        return self.arch == codegen.llvm_get_system_triple().split("-")[0] and needed <= _host_features()

    @property
    def key(self) -> str:
        """A canonical name for this target, stable across runs and machines; used to key tuning logs."""
        parts = ["llvm", self.arch, self.mcpu or "generic"]
        if self.mattr:
            parts.append(",".join(sorted(self.mattr)))
        if self.num_cores:
            parts.append(f"{self.num_cores}c")
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; ``parse_target(t.to_dict()) == t``."""
        described = dict(self.options)
        if self.preset:
            described["preset"] = self.preset
        return described

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DseTarget) and self.options == other.options

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        preset = f"preset={self.preset!r}, " if self.preset else ""
        return f"DseTarget({preset}{self.options})"


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [_plain(item) for item in value]
    return str(value)


# LLVM features that add instructions (as opposed to tuning hints such as "slow-3ops-lea"): code using
# one of them faults on a CPU without it.
_INSTRUCTION_SET_FEATURES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "dotprod", "fullfp16", "fp16",
                             "sve", "i8mm", "bf16")
_HOST_FEATURES: frozenset[str] | None = None


def _host_features() -> frozenset[str]:
    global _HOST_FEATURES
    if _HOST_FEATURES is None:
        host = tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()})
        _HOST_FEATURES = frozenset(str(f) for f in codegen.llvm_get_cpu_features(host))
    return _HOST_FEATURES


def parse_target(target: TargetLike) -> DseTarget:
    """Turn what a user wrote into a :class:`DseTarget`.

    Parameters
    ----------
    target
        One of: a preset name (``"host"``, ``"rpi4"``, ``"rpi3"``, ``"rpi5"``, ``"cortex-a72"``,
        ``"cortex-a53"``, ``"cortex-a76"``, ``"cortex-a55"``; see :func:`preset_names`); a legacy TVM
        string (``"llvm -mtriple=aarch64-linux-gnu -mattr=+neon -mcpu=cortex-a72 -num-cores=4"``); a dict
        of TVM options (``{"kind": "llvm", "mcpu": "cortex-a72", ...}``), optionally with ``"preset"``
        whose options the other keys override; a ``tvm.target.Target``; or a :class:`DseTarget`.
        ``-mtriple=aarch64`` means ``aarch64-linux-gnu``. Plain ``"llvm"`` is TVM's generic CPU of the
        host architecture (baseline SIMD only); use ``"host"`` for this machine's CPU.

    Returns
    -------
    DseTarget

    Raises
    ------
    TargetError
        Naming the unknown option, kind, preset or CPU and listing what is accepted.

    Examples
    --------
    >>> parse_target("llvm -mtriple=aarch64-linux-gnu -mattr=+neon -mcpu=cortex-a72").vector_bits
    128
    >>> parse_target("rpi4").num_cores
    4
    """
    if isinstance(target, DseTarget):
        return target
    preset = None
    if isinstance(target, tvm.target.Target):
        if target.kind.name not in SUPPORTED_KINDS:
            raise TargetError(f"unsupported target kind {target.kind.name!r}; accepted: {', '.join(SUPPORTED_KINDS)}")
        # keys and tag are derived by TVM from the triple; carrying them over would pin stale ones
        exported = {k: v for k, v in dict(target.export()).items() if k not in ("keys", "tag")}
        options = _validate_dict(exported)
        where = str(target)
    elif isinstance(target, str):
        text = target.strip()
        if not text:
            raise TargetError(f"empty target; use a preset ({', '.join(preset_names())}) or a string like 'llvm -mcpu=...'")
        where = repr(text)
        if text.split()[0] in tvm.target.Target.list_kinds():
            options = _parse_cli_string(text)
        else:
            preset, options = _resolve_preset(text)
    elif isinstance(target, Mapping):
        config = dict(target)
        where = repr(config)
        if "preset" in config:
            preset, options = _resolve_preset(str(config.pop("preset")))
            options.update(_validate_dict({"kind": options["kind"], **config}))
        else:
            options = _validate_dict(config)
    else:
        raise TargetError(f"cannot use {type(target).__name__} as a target; give a preset name, a TVM target "
                          "string, a dict of TVM target options or a tvm.target.Target")
    options = _normalize(options, where)
    try:
        tvm_target = tvm.target.Target(options)
    except Exception as error:  # TVM raises plain ValueError/TVMError with its own wording
        raise TargetError(f"TVM rejected target {where}: {error}") from error
    return DseTarget(tvm_target, preset=preset)
