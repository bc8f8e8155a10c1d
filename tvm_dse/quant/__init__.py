"""Quantization: the int8 scheme shared by kernels and references, the int8 dot-product intrinsics,
calibration of activation ranges from user data, and accuracy bounds for the search."""

from .accuracy import AccuracyBound, top1
from .calibration import METHODS, Calibration, CalibrationError, calibrate
from .scheme import UNCALIBRATED, ActivationQuant, quantize_weights_reference

__all__ = ["METHODS", "UNCALIBRATED", "AccuracyBound", "ActivationQuant", "Calibration", "CalibrationError",
           "calibrate", "quantize_weights_reference", "top1"]
