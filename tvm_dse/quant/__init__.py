"""Quantization: the int8 scheme shared by kernels and references, the int8 dot-product intrinsics,
and calibration of activation ranges from user data."""

from .calibration import METHODS, Calibration, CalibrationError, calibrate
from .scheme import UNCALIBRATED, ActivationQuant, quantize_weights_reference

__all__ = ["METHODS", "UNCALIBRATED", "ActivationQuant", "Calibration", "CalibrationError", "calibrate",
           "quantize_weights_reference"]
