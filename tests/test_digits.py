"""The digits task: the shipped CNN and test split, and the fp32 plan tvm_dse builds for it."""

import numpy as np

from tvm_dse import optimize
from tvm_dse.testing import digits_task, onnxruntime_session


def test_the_shipped_digits_model_classifies_its_test_split():
    task = digits_task()
    assert task.images.shape == (360, 1, 8, 8) and task.images.dtype == np.float32
    assert sorted(set(task.labels.tolist())) == list(range(10))
    session = onnxruntime_session(task.model)
    assert task.top1(lambda feed: session.run(None, feed)[0]) >= 0.95


def test_the_fp32_plan_keeps_the_model_s_top1(tmp_path):
    task = digits_task()
    session = onnxruntime_session(task.model)
    reference = task.top1(lambda feed: session.run(None, feed)[0])
    result = optimize(task.model, logs=tmp_path, shipped_logs=False, show_progress=False, verify=1, reference=False,
                      profile=False, compare_searchers=())
    assert result.report["nodes"]  # its convolutions and classifier went through the search
    assert task.top1(lambda feed: result.run(feed)[0]) == reference
