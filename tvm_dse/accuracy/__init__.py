"""Accuracy of reduced-precision plans: calibration of activation ranges from user data, accuracy bounds
for the search, and each node's measured sensitivity to quantization."""

from .bound import AccuracyBound, top1
from .calibration import METHODS, Calibration, CalibrationError, calibrate

__all__ = ["METHODS", "AccuracyBound", "Calibration", "CalibrationError", "calibrate", "top1"]
