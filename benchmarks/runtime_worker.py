"""One warm contender of ``deployed.py`` in a process of its own: a runtime with a model loaded, timing rounds
on request. It needs numpy and its runtime only (it runs in the peers' own environments too).

    python runtime_worker.py KIND MODEL INPUTS.npz THREADS OUTPUT.npy

KIND is tvm (an exported tvm_dse library, run with TVM's runtime library alone), onnxruntime, openvino, ncnn (MODEL is
the .param beside its .bin), mnn or litert. After a warm-up it writes its output for INPUTS to OUTPUT.npy and
prints ``ready``; then each line ``round`` on stdin is answered with the median ms per run of a plain
wall-clock loop of ROUND_S, ``memory`` with the process's peak resident memory in MB, and ``runtime memory``
with its peak once the runtime was imported, before the model was loaded.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

# how tvm_dse runs a library with TVM's runtime alone, a leaf of numpy and the standard library (tvm_dse itself
# is not installed in the peers' environments)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tvm_dse"))
from deployed_library import peak_resident_bytes  # noqa: E402

WARMUP_S = 2.0
ROUND_S = 1.0
_runtime_memory_mb = float("nan")  # set by each KIND once its runtime is imported


def _runtime_imported() -> None:
    global _runtime_memory_mb
    _runtime_memory_mb = _peak_resident_mb()


def _tvm(path: str, feed: dict[str, np.ndarray], threads: int) -> Callable[[], np.ndarray]:
    # tvm_ffi imports PyTorch wherever it is installed (tvm_dse's test environment has it), 250 MB resident
    # that a deployment does not carry
    sys.modules["torch"] = None
    from deployed_library import DeployedLibrary, load_runtime

    load_runtime()
    _runtime_imported()
    library = DeployedLibrary(path)
    arguments = library.tensors(*feed.values())
    return lambda: library.run_tensors(arguments)


def _onnxruntime(path: str, feed: dict[str, np.ndarray], threads: int) -> Callable[[], np.ndarray]:
    import onnxruntime

    _runtime_imported()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feed)[0]


def _openvino(path: str, feed: dict[str, np.ndarray], threads: int) -> Callable[[], np.ndarray]:
    import openvino

    _runtime_imported()
    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                           "INFERENCE_PRECISION_HINT": "f32",
                                                           "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda: request.infer(feed)[compiled.output(0)]


def _ncnn(path: str, feed: dict[str, np.ndarray], threads: int) -> Callable[[], np.ndarray]:
    import ncnn

    _runtime_imported()
    net = ncnn.Net()
    net.opt.num_threads = threads
    # fp32 throughout, as every other contender runs
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.load_param(path)
    net.load_model(path.removesuffix(".param") + ".bin")
    (data,) = feed.values()
    image = ncnn.Mat(np.ascontiguousarray(data[0]))  # batch 1: ncnn takes C x H x W

    def run() -> np.ndarray:
        extractor = net.create_extractor()
        extractor.input("in0", image)
        _, output = extractor.extract("out0")
        return np.array(output)[None]

    return run


def _mnn(path: str, feed: dict[str, np.ndarray], threads: int) -> Callable[[], np.ndarray]:
    import MNN

    _runtime_imported()
    runtime = MNN.nn.create_runtime_manager(({"backend": "CPU", "numThread": threads, "precision": "high"},))
    (name, data), = feed.items()
    net = MNN.nn.load_module_from_file(path, [name], [], runtime_manager=runtime)
    value = MNN.expr.const(data, list(data.shape), MNN.expr.NCHW)
    return lambda: net.forward([value])[0].read()


def _litert(path: str, feed: dict[str, np.ndarray], threads: int) -> Callable[[], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    _runtime_imported()
    interpreter = Interpreter(model_path=path, num_threads=threads)  # XNNPACK delegate by default
    interpreter.allocate_tensors()
    (data,) = feed.values()
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    nhwc = np.ascontiguousarray(data.transpose(0, 2, 3, 1))  # the converter makes the input NHWC

    def run() -> np.ndarray:
        interpreter.set_tensor(given["index"], nhwc)
        interpreter.invoke()
        return interpreter.get_tensor(taken["index"])

    return run


def _peak_resident_mb() -> float:
    return peak_resident_bytes() / 2**20


KINDS = {"tvm": _tvm, "onnxruntime": _onnxruntime, "openvino": _openvino, "ncnn": _ncnn, "mnn": _mnn,
         "litert": _litert}


def main(kind: str, path: str, inputs: str, threads: str, output: str) -> None:
    feed = dict(np.load(inputs))
    run = KINDS[kind](path, feed, int(threads))
    began = time.perf_counter()
    while time.perf_counter() - began < WARMUP_S:
        result = run()
    np.save(output, np.asarray(np.from_dlpack(result) if hasattr(result, "__dlpack__") else result, np.float32))
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() in ("memory", "runtime memory"):
            print(f"{_peak_resident_mb() if line.strip() == 'memory' else _runtime_memory_mb:.1f}", flush=True)
            continue
        samples, began = [], time.perf_counter()
        while time.perf_counter() - began < ROUND_S or len(samples) < 3:
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        print(f"{statistics.median(samples) * 1e3:.6f}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
