"""Quantization: the int8 scheme shared by kernels and references, and the int8 dot-product intrinsics.

Calibration, accuracy bounds and sensitivity, which build whole plans, are in :mod:`tvm_dse.accuracy`."""

from .scheme import UNCALIBRATED, ActivationQuant, quantize_weights_reference

__all__ = ["UNCALIBRATED", "ActivationQuant", "quantize_weights_reference"]
