"""Calibration: the range of every tunable node's input activation over user data, and the int8
quantization it gives (:class:`~tvm_dse.quant.scheme.ActivationQuant`), as plain JSON.

The fp32 model runs in onnxruntime with each tunable node's input added as a graph output. Methods:
``minmax`` takes the smallest and largest value seen; ``percentile`` takes, per batch, the given
percentile of the values at each end (clipping rare outliers, which otherwise stretch the scale) and
averages it over the batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np

from ..errors import TvmDseError
from ..frontend import Model
from ..quant.scheme import ActivationQuant

METHODS = ("minmax", "percentile")
DEFAULT_PERCENTILE = 99.99

CalibrationData = Union[np.ndarray, Mapping[str, np.ndarray], Iterable[Union[np.ndarray, Mapping[str, np.ndarray]]]]


class CalibrationError(TvmDseError, ValueError):
    """Calibration data that does not fit the model, or a model calibration cannot run."""


@dataclass
class Calibration:
    """Per tunable node (by name): the [low, high] range its input was calibrated to."""

    method: str
    ranges: dict[str, tuple[float, float]]
    batches: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def quant(self, node: str) -> ActivationQuant:
        """The int8 quantization of ``node``'s input."""
        try:
            low, high = self.ranges[node]
        except KeyError:
            raise CalibrationError(f"node {node!r} was not calibrated; calibrated: {', '.join(sorted(self.ranges))}") from None
        return ActivationQuant.from_range(low, high)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "batches": self.batches, "metadata": self.metadata,
                "ranges": {name: list(bounds) for name, bounds in self.ranges.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        try:
            return cls(data["method"], {name: (float(lo), float(hi)) for name, (lo, hi) in data["ranges"].items()},
                       int(data["batches"]), dict(data.get("metadata", {})))
        except (KeyError, TypeError, ValueError) as error:
            raise CalibrationError(f"malformed calibration: {error}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _split(array: np.ndarray, shape: tuple[int, ...], name: str) -> list[np.ndarray]:
    """Samples along axis 0 cut into inputs of ``shape`` (its batch size at a time)."""
    batch = shape[0]
    if array.shape[1:] != tuple(shape[1:]) or len(array) % batch:
        raise CalibrationError(f"calibration data for {name!r} of shape {array.shape} does not split into inputs of "
                               f"shape {shape} (samples along axis 0, a multiple of {batch})")
    return [array[i:i + batch] for i in range(0, len(array), batch)]


def calibration_feeds(model: Model, data: CalibrationData | str | Path) -> list[dict[str, np.ndarray]]:
    """Calibration data as a list of feeds of the model's bound input shapes.

    Accepted: one feed (a dict by input name); a dict of arrays with samples along axis 0; an iterable of
    feeds; for a single-input model an array of samples along axis 0 (or an iterable of such inputs);
    a ``.npy`` file (that array) or ``.npz`` file (arrays by input name, samples along axis 0).
    """
    names = [i.name for i in model.inputs]
    shapes = {i.name: tuple(i.shape) for i in model.inputs}
    if isinstance(data, (str, Path)):
        try:
            loaded = np.load(data)
        except (OSError, ValueError) as error:
            raise CalibrationError(f"cannot read calibration data {data}: {error}") from None
        data = {name: loaded[name] for name in loaded.files} if hasattr(loaded, "files") else loaded
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise CalibrationError(f"model {model.name!r} has {len(names)} inputs; give feeds as dicts by input name")
        items: list[Any] = _split(data, shapes[names[0]], names[0])
    elif isinstance(data, Mapping):
        missing = [n for n in names if n not in data]
        if missing:
            raise CalibrationError(f"calibration data lacks input {missing[0]!r}")
        if all(tuple(np.shape(data[n])) == shapes[n] for n in names):
            items = [data]
        else:
            columns = {n: _split(np.asarray(data[n]), shapes[n], n) for n in names}
            if len({len(c) for c in columns.values()}) != 1:
                raise CalibrationError("calibration arrays hold different numbers of samples")
            items = [{n: columns[n][i] for n in names} for i in range(len(columns[names[0]]))]
    else:
        items = list(data)
    feeds = []
    for item in items:
        feed = item if isinstance(item, Mapping) else {names[0]: item}
        for spec in model.inputs:
            if spec.name not in feed:
                raise CalibrationError(f"calibration feed lacks input {spec.name!r}")
            if tuple(np.shape(feed[spec.name])) != tuple(spec.shape):
                raise CalibrationError(f"calibration input {spec.name!r} has shape {np.shape(feed[spec.name])}, "
                                       f"the model takes {spec.shape}")
        feeds.append({spec.name: np.asarray(feed[spec.name], spec.dtype) for spec in model.inputs})
    if not feeds:
        raise CalibrationError("no calibration data given")
    return feeds


def calibrate(model: Model, data: CalibrationData | str | Path, method: str = "minmax",
              percentile: float = DEFAULT_PERCENTILE) -> Calibration:
    """Run ``model`` (fp32, onnxruntime) on ``data`` and record the range of every tunable node's input.

    Parameters
    ----------
    model
        An imported model (:func:`tvm_dse.load_model`) that came from ONNX.
    data
        Inputs representative of the model's use, in any form :func:`calibration_feeds` accepts.
    method
        ``"minmax"`` or ``"percentile"``.
    percentile
        For ``"percentile"``: the upper percentile taken (the lower one is 100 minus it).
    """
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; accepted: {', '.join(METHODS)}")
    if method == "percentile" and not 50 < percentile <= 100:
        raise CalibrationError(f"percentile must be in (50, 100], got {percentile}")
    if model.onnx_model is None:
        raise CalibrationError(f"model {model.name!r} came from a Relax module; calibration runs the ONNX model "
                               "in onnxruntime (load the model from ONNX)")
    import onnx
    import onnxruntime

    graph_nodes = {node.name: node for node in model.onnx_model.graph.node}
    tensors = {}
    for name in model.node_names:
        if name not in graph_nodes:
            raise CalibrationError(f"node {name!r} is not in the ONNX graph of {model.name!r}")
        tensors[name] = graph_nodes[name].input[0]
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model.onnx_model)
    existing = {o.name for o in augmented.graph.output}
    for tensor in dict.fromkeys(tensors.values()):
        if tensor not in existing:
            augmented.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    session = onnxruntime.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = list(dict.fromkeys(tensors.values()))
    per_batch: dict[str, list[tuple[float, float]]] = {t: [] for t in wanted}
    feeds = calibration_feeds(model, data)
    for feed in feeds:
        for tensor, value in zip(wanted, session.run(wanted, feed)):
            if method == "minmax":
                per_batch[tensor].append((float(value.min()), float(value.max())))
            else:
                low, high = np.percentile(value, [100 - percentile, percentile])
                per_batch[tensor].append((float(low), float(high)))
    bounds = {}
    for tensor, seen in per_batch.items():
        lows, highs = zip(*seen)
        bounds[tensor] = (min(lows), max(highs)) if method == "minmax" else (float(np.mean(lows)), float(np.mean(highs)))
    metadata = {"model_fingerprint": model.fingerprint}
    if method == "percentile":
        metadata["percentile"] = percentile
    return Calibration(method, {name: bounds[tensor] for name, tensor in tensors.items()}, len(feeds), metadata)
