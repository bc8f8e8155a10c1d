"""The digits task: a small CNN trained on scikit-learn's bundled handwritten digits (8x8, ten classes) and
its held-out test split, shipped in ``data/`` (``scripts/train_digits.py`` regenerates them). A real task
with a real accuracy, for checking that optimized or quantized plans keep the model's top-1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

DATA = Path(__file__).resolve().parent / "data"
INPUT_NAME = "image"


@dataclass(frozen=True)
class DigitsTask:
    """The trained model (ONNX, batch 1, input ``image`` 1x1x8x8, output 10 logits), the test split, and
    100 training images for calibrating quantized plans."""

    model: onnx.ModelProto
    images: np.ndarray  # N x 1 x 8 x 8 float32 in [0, 1]
    labels: np.ndarray  # N int64
    calibration: np.ndarray  # 100 x 1 x 8 x 8 float32, from the training split

    def top1(self, run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> float:
        """Top-1 accuracy of ``run`` (a feed of one image -> its logits) over the test split."""
        predicted = np.array([int(np.argmax(run({INPUT_NAME: image[None]}))) for image in self.images])
        return float(np.mean(predicted == self.labels))


def digits_task() -> DigitsTask:
    """Load the shipped digits model, test split and calibration images."""
    with np.load(DATA / "digits_test.npz") as split:
        return DigitsTask(onnx.load(DATA / "digits_cnn.onnx"), split["images"], split["labels"], split["calibration"])
