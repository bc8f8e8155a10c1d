"""int8 dot-product tensor intrinsics: ``C[lanes] (int32) += sum_k A[k] * B[lanes, k]`` over 4 bytes of
activation (broadcast to every lane) and 4 bytes of weights per lane, one instruction sequence each:

- x86 AVX2: ``vpmaddubsw`` (u8 x s8 pairs summed in int16) then ``vpmaddwd`` by ones (into int32), 8 lanes;
- x86 AVX-512 VNNI: ``vpdpbusd`` (u8 x s8 into int32), 16 lanes, typed as LLVM 22 expects;
- aarch64 +dotprod: ``sdot`` (s8 x s8 into int32), 4 lanes.

LLVM forms none of them from a plain loop. Each is registered twice, for an accumulator in global memory
and one held in registers (``local``): tensorize matches the buffer scope. Registration is lazy (parsing
the TVMScript takes ~0.05 s each; importing TVM's own ``tvm.s_tir.tensor_intrin`` takes a minute here).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir
from tvm.script import tirx as T

from ..target import DseTarget


@dataclass(frozen=True)
class DotIntrinsic:
    """One int8 dot product the target has: its registered name, int32 lanes, operand types, weight range."""

    name: str
    lanes: int
    data_dtype: str  # activation codes: uint8, or int8 (uint8 code - 128) for signed x signed
    weight_qmax: int
    instruction: str

    def registered(self, scope: str) -> str:
        """The tensor intrinsic's name for an accumulator in ``scope`` (registered on first use)."""
        name = f"{self.name}_{scope}"
        if name not in _REGISTERED:
            description, implementation = _BUILDERS[self.name](scope)
            s_tir.TensorIntrin.register(name, description, implementation)
            _REGISTERED.add(name)
        return name


_REGISTERED: set[str] = set()


def _description(lanes: int, data_dtype: str, scope: str):
    @T.prim_func(s_tir=True)
    def description(A: T.Buffer((4,), data_dtype, offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
                    C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return description


def _avx2(scope: str):
    @T.prim_func(s_tir=True)
    def implementation(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((8, 4), "int8", offset_factor=1),
                       C: T.Buffer((8,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            data = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8), dtype="uint8x32")
            pairs = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), data,
                                            B.vload([0, 0], dtype="int8x32"), dtype="int16x16")
            C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.int16x16(1), dtype="int32x8")

    return _description(8, "uint8", scope), implementation


def _accumulating(lanes: int, data_dtype: str, instruction: str):
    """An intrinsic whose one instruction takes the accumulator, the broadcast activation bytes and the
    weights (VNNI's vpdpbusd, Arm's sdot)."""
    def build(scope: str):
        @T.prim_func(s_tir=True)
        def implementation(A: T.Buffer((4,), data_dtype, offset_factor=1),
                           B: T.Buffer((lanes, 4), "int8", offset_factor=1),
                           C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope)) -> None:
            with T.sblock("root"):
                T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
                T.writes(C[0:lanes])
                data = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], f"{data_dtype}x4"), dtype="int32"), lanes),
                                     dtype=f"{data_dtype}x{4 * lanes}")
                C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(instruction), C.vload([0], dtype=f"int32x{lanes}"),
                    data, B.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=f"int32x{lanes}")

        return _description(lanes, data_dtype, scope), implementation

    return build


_BUILDERS = {"tvm_dse_dot_avx2": _avx2,
             "tvm_dse_dot_vnni": _accumulating(16, "uint8", "llvm.x86.avx512.vpdpbusd.512"),
             "tvm_dse_dot_sdot": _accumulating(4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8")}
AVX2 = DotIntrinsic("tvm_dse_dot_avx2", 8, "uint8", 63, "vpmaddubsw+vpmaddwd")
VNNI = DotIntrinsic("tvm_dse_dot_vnni", 16, "uint8", 127, "vpdpbusd")
SDOT = DotIntrinsic("tvm_dse_dot_sdot", 4, "int8", 127, "sdot")


def dot_intrinsic(target: DseTarget) -> DotIntrinsic | None:
    """The int8 dot product ``target`` has a fast path for, or None."""
    if target.is_aarch64:
        return SDOT if target.has_dotprod else None
    if target.is_x86:
        if target.has_dotprod and target.vector_bits == 512:
            return VNNI
        if "avx2" in target.cpu_features:
            return AVX2
    return None
