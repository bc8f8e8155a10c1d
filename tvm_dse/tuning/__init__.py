"""Kernel-level tuning: MetaSchedule over a strategy's schedule template, the tuning logs that keep every
measurement per target and TVM version, and a latency predictor learned from them."""

from .logs import StoreSummary, TuningLogs, default_logs_dir, shipped_logs, shipped_target_keys
from .predictor import LatencyPredictor, PredictorError, held_out_error, promising_strategies
from .tuner import DEFAULT_TRIALS, TuneResult, kernel_records, plan_kernels, tune_kernel, tune_plan_kernels

__all__ = [
    "DEFAULT_TRIALS", "LatencyPredictor", "PredictorError", "StoreSummary", "TuneResult", "TuningLogs",
    "default_logs_dir", "held_out_error", "kernel_records", "plan_kernels", "promising_strategies",
    "shipped_logs", "shipped_target_keys", "tune_kernel", "tune_plan_kernels",
]
