"""int8 quantization: the scheme, calibration from user data, quantized plans (lowered, validated, on the
digits task with its real accuracy) and int8 options in optimize's search."""

import re

import numpy as np
import pytest
import tvm

from tvm_dse import optimize
from tvm_dse.frontend import load_model
from tvm_dse.graph import build_graph
from tvm_dse.layouts import codes_layout
from tvm_dse.lower import build_plan, follower_name, lower_plan
from tvm_dse.plan import NodeChoice, Plan, PlanError
from tvm_dse.errors import TvmDseError
from tvm_dse.accuracy import AccuracyBound, Calibration, CalibrationError, calibrate
from tvm_dse.quant import ActivationQuant
from tvm_dse.accuracy.calibration import calibration_feeds
from tvm_dse.accuracy.sensitivity import int8_plan
from tvm_dse.strategies import get_strategy
from tvm_dse.target import parse_target
from tvm_dse.testing import digits_task, onnxruntime_session, relative_error

INT8 = "spatial_pack_nchwc_int8"


@pytest.fixture(scope="module")
def digits():
    task = digits_task()
    model = load_model(task.model)
    return task, model, build_graph(model)


@pytest.fixture(scope="module")
def digits_logs(tmp_path_factory):
    """Tuning logs shared by this module's optimize runs: each kernel of the digits model is measured once."""
    return tmp_path_factory.mktemp("digits_logs")


def test_activation_quantization_keeps_zero_exact_and_covers_its_range():
    for low, high in [(-1.5, 3.0), (0.0, 6.0), (0.5, 2.0), (-4.0, -1.0)]:
        quant = ActivationQuant.from_range(low, high)
        assert quant.dequantize(quant.quantize(np.float32(0.0))) == 0.0  # zero padding stays exact
        values = np.linspace(min(low, 0), max(high, 0), 101, dtype=np.float32)
        assert np.abs(quant.dequantize(quant.quantize(values)) - values).max() <= quant.scale / 2 + 1e-6
    with pytest.raises(ValueError, match="scale must be positive"):
        ActivationQuant(0.0, 0)
    with pytest.raises(ValueError, match="zero point"):
        ActivationQuant(0.1, 300)


def test_minmax_calibration_records_each_node_input_range(digits):
    task, model, graph = digits
    calibration = calibrate(model, task.calibration)
    assert calibration.batches == len(task.calibration) and set(calibration.ranges) == {n.name for n in graph.nodes}
    # the first convolution reads the image itself
    assert calibration.ranges["conv1"] == (float(task.calibration.min()), float(task.calibration.max()))
    later = calibration.ranges["conv3"]
    assert later[0] >= 0.0 and later[1] > 0.0  # conv3 reads a relu's output
    percentile = calibrate(model, task.calibration, method="percentile")
    assert percentile.method == "percentile" and percentile.metadata["percentile"] == 99.99
    for name, (low, high) in percentile.ranges.items():
        assert calibration.ranges[name][0] <= low <= high <= calibration.ranges[name][1]
    assert Calibration.from_dict(calibration.to_dict()) == calibration


def test_calibration_refuses_data_that_does_not_fit(digits, tmp_path):
    task, model, _ = digits
    with pytest.raises(CalibrationError, match=r"shape \(3, 8, 8\) does not split into inputs of shape \(1, 1, 8, 8\)"):
        calibrate(model, task.calibration[:3, 0])
    with pytest.raises(CalibrationError, match="unknown calibration method 'kl'"):
        calibrate(model, task.calibration, method="kl")
    with pytest.raises(CalibrationError, match="lacks input 'image'"):
        calibrate(model, [{"pixels": task.calibration[:1]}])
    with pytest.raises(CalibrationError, match="no calibration data"):
        calibrate(model, [])
    with pytest.raises(CalibrationError, match="cannot read calibration data"):
        calibrate(model, tmp_path / "missing.npy")
    np.savez(tmp_path / "data.npz", image=task.calibration[:6])
    feeds = calibration_feeds(model, tmp_path / "data.npz")
    assert len(feeds) == 6 and all(f["image"].shape == (1, 1, 8, 8) for f in feeds)
    with pytest.raises(CalibrationError, match="node 'nope' was not calibrated"):
        calibrate(model, feeds).quant("nope")


def test_a_quantized_node_needs_its_calibration(digits, tmp_path):
    task, model, graph = digits
    plan = Plan.uniform(model, graph, "host", INT8)
    int8_nodes = [n for n, c in plan.nodes.items() if get_strategy(c.strategy).precision == "int8"]
    first = plan.nodes[int8_nodes[0]].strategy
    with pytest.raises(PlanError, match=rf"node '{int8_nodes[0]}': int8 strategy {first} needs its input's quantization"):
        plan.validate(model, graph, "host")
    plan.calibrate(calibrate(model, task.calibration))
    plan.validate(model, graph, "host")
    reloaded = Plan.load(plan.save(tmp_path / "plan.json"))
    assert reloaded.nodes[int8_nodes[0]].quant == plan.nodes[int8_nodes[0]].quant
    reloaded.nodes[int8_nodes[0]] = NodeChoice(INT8, None, {"scale": -1.0, "zero_point": 0})
    with pytest.raises(PlanError, match="bad quantization"):
        reloaded.validate(model, graph, "host")


def test_the_int8_plan_keeps_the_digits_accuracy(digits):
    """Every convolution int8 (the first, with one input channel, through im2col; the classifier stays
    fp32), calibrated on training images: top-1 on the test split within half a point of onnxruntime's fp32
    model."""
    task, model, graph = digits
    session = onnxruntime_session(task.model)
    reference = task.top1(lambda feed: session.run(None, feed)[0])
    for method in ("minmax", "percentile"):
        plan = int8_plan(model, graph, parse_target("host"), calibrate(model, task.calibration, method=method))
        assert {n: c.strategy for n, c in plan.nodes.items() if get_strategy(c.strategy).precision == "int8"} == \
            {"conv1": "im2col_int8", "conv2": INT8, "conv3": INT8}
        built = build_plan(model, plan, "host", graph)
        assert task.top1(lambda feed: built.run(feed)[0]) >= reference - 0.005, method
    # Only the image is quantized by a kernel of its own (into conv1's im2col); conv1's kernel and the max
    # pool after conv2 quantize in their output stage for their one consumer, so they write the codes.
    lowered = lower_plan(model, plan, "host", graph)
    writing_codes = sorted(gv.name_hint for gv, func in lowered.functions.items()
                           if isinstance(func, tvm.tirx.PrimFunc) and str(func.params[-1].dtype) == "uint8")
    host = parse_target("host")
    layouts = {v.name: get_strategy(plan.nodes[v.name].strategy).layouts(v.workload, host) for v in graph.nodes}
    expected = [rf"fused_dse_{graph.node('conv1').id}_im2col_int8_add_relu_layout_{layouts['conv1'].output}_to_"
                rf"{layouts['conv2'].data}",
                rf"fused_{follower_name(graph.node('conv2').id, layouts['conv2'].output, 'max_pool2d')}_layout_"
                rf"{layouts['conv2'].output}_to_{layouts['conv3'].data}",
                rf"layout_NCHW_to_{layouts['conv1'].data}"]
    assert len(writing_codes) == len(expected), writing_codes
    assert all(re.fullmatch(rf"{pattern}\d*", name) for pattern, name in zip(expected, writing_codes)), \
        (writing_codes, expected)  # FuseTIR numbers twins


def test_optimize_with_calibration_data_offers_int8_and_records_it(digits, digits_logs):
    task, _, _ = digits
    result = optimize(task.model, logs=digits_logs, shipped_logs=False, show_progress=False, verify=1, reference=False,
                      profile=False, compare_searchers=(), calibration_data=task.calibration)
    offered = {o.name for node in result.space.nodes if node.is_tunable for o in node.options}
    assert INT8 in offered
    # Quantizing is priced on every edge into an int8 option, measured like a layout conversion, except
    # where a convolution's output reaches only that node in the same arrangement: then the producer's
    # output stage quantizes (free). The image has no producing kernel.
    for edge in result.space.edges:
        producer, consumer = result.space.nodes[edge.source], result.space.nodes[edge.target]
        for q, option in enumerate(consumer.options):
            if consumer.is_tunable and get_strategy(option.name).precision == "int8":
                for p, produced in enumerate(producer.options):
                    in_codes = codes_layout(produced.output_layout) == option.input_layout
                    if producer.is_tunable and in_codes:
                        assert edge.cost[p][q] == 0, (consumer.name, produced.name)
                    else:
                        assert 0 < edge.cost[p][q] < float("inf"), (consumer.name, produced.name)
    for name, choice in result.plan.nodes.items():
        quantized = get_strategy(choice.strategy).precision == "int8"
        assert (choice.quant is not None) == quantized, name
    assert result.plan.provenance["calibration"]["method"] == "minmax"
    session = onnxruntime_session(task.model)
    assert task.top1(lambda feed: result.run(feed)[0]) >= task.top1(lambda feed: session.run(None, feed)[0]) - 0.005
    plain = optimize(task.model, logs=digits_logs, shipped_logs=False, show_progress=False, verify=1, reference=False,
                     profile=False, compare_searchers=())
    assert all(get_strategy(o.name).precision == "fp32" for node in plain.space.nodes if node.is_tunable
               for o in node.options)


def test_an_accuracy_bounded_plan_is_measured_within_its_bound(digits, digits_logs):
    task, _, _ = digits
    bound = AccuracyBound(task.images, task.labels, max_loss=0.005)
    result = optimize(task.model, logs=digits_logs, shipped_logs=False, show_progress=False, verify=1, reference=False,
                      profile=False, compare_searchers=("exact",), calibration_data=task.calibration, accuracy=bound)
    accuracy = result.report["accuracy"]
    session = onnxruntime_session(task.model)
    assert accuracy["fp32_score"] == task.top1(lambda feed: session.run(None, feed)[0])
    assert accuracy["plan_score"] == task.top1(lambda feed: result.run(feed)[0])  # measured on the built plan
    assert accuracy["loss"] <= 0.005
    assert set(accuracy["sensitivity"]["nodes"]) == {"conv1", "conv2", "conv3"}  # the nodes int8 applies to
    losses = {n.name: o.accuracy_loss for n in result.space.nodes if n.is_tunable for o in n.options
              if get_strategy(o.name).precision == "int8"}
    assert losses == {name: rows["int8"]["loss"] for name, rows in accuracy["sensitivity"]["nodes"].items()}
    assert accuracy["estimated_loss"] == pytest.approx(sum(losses[n] for n in accuracy["quantized_nodes"]))


def test_a_plan_losing_more_than_its_estimate_is_searched_again(digits, digits_logs):
    """A metric no single int8 node fails but all together do: the summed per-layer estimate (zero) passes
    such a plan, its measured score does not, and the search runs again until the built plan keeps the bound."""
    task, model, graph = digits
    calibration = calibrate(model, task.calibration)
    feeds = calibration_feeds(model, task.images[:40])
    base = Plan.uniform(model, graph, "host", "spatial_pack_nchwc")
    fp32 = build_plan(model, base, "host", graph)
    reference = [fp32.run(f)[0] for f in feeds]

    def deviation(nodes):
        built = build_plan(model, int8_plan(model, graph, parse_target("host"), calibration, nodes), "host", graph)
        return max(float(np.abs(built.run(f)[0] - r).max()) for f, r in zip(feeds, reference))

    quantizable = ["conv1", "conv2", "conv3"]
    alone = max(deviation([name]) for name in quantizable)
    together = deviation(quantizable)
    assert together > alone
    threshold = (alone + together) / 2

    def faithful(outputs, labels):  # 1 while the logits stay within the threshold of fp32's
        return float(max(float(np.abs(o[0] - r).max()) for o, r in zip(outputs, reference)) <= threshold)

    bound = AccuracyBound(task.images[:40], metric=faithful, max_loss=0.5)
    result = optimize(task.model, logs=digits_logs, shipped_logs=False, show_progress=False, verify=1, reference=False,
                      profile=False,
                      compare_searchers=(), calibration_data=task.calibration, accuracy=bound, searcher="exact")
    accuracy = result.report["accuracy"]
    assert accuracy["metric"] == "faithful" and accuracy["plan_score"] == 1.0
    assert all(rows["int8"]["loss"] == 0.0 for rows in accuracy["sensitivity"]["nodes"].values())
    assert accuracy["quantized_nodes"] != quantizable
    tried = accuracy["plans_tried"]
    assert tried[-1]["score"] == 1.0 and all(t["score"] == 0.0 for t in tried[:-1])
    assert all(len(t["quantized_nodes"]) >= 2 for t in tried[:-1])  # single nodes never fail
    assert len(tried) == accuracy["searches"]
    if tried[0]["quantized_nodes"] == quantizable:
        assert len(tried) >= 2


def test_accuracy_bounds_are_checked(digits):
    task, _, _ = digits
    with pytest.raises(TvmDseError, match="top1 metric needs labels"):
        AccuracyBound(task.images)
    with pytest.raises(TvmDseError, match="unknown metric 'f1'"):
        AccuracyBound(task.images, task.labels, metric="f1")
    with pytest.raises(TvmDseError, match="an accuracy bound needs a reduced precision"):
        optimize(task.model, show_progress=False, accuracy=AccuracyBound(task.images, task.labels))


@pytest.mark.parametrize("seed", range(2))
def test_random_mixed_precision_plans_stay_close_to_onnxruntime(seed):
    """Every node on a random applicable strategy, int8 ones included, joins in random producer layouts:
    the outputs stay within the quantization error of onnxruntime's fp32 ones on calibrated data."""
    import random

    from tvm_dse.strategies import applicable_strategies

    model = load_model("zoo:resnet18-small")
    graph = build_graph(model)
    feeds = [model.random_feed(s) for s in range(3)]
    rng = random.Random(seed)
    choices = {node.name: rng.choice(applicable_strategies(node.workload, parse_target("host"))).name
               for node in graph.nodes}
    assert any(name == INT8 for name in choices.values())
    plan = Plan.create(model, "host", choices).calibrate(calibrate(model, feeds))
    built = build_plan(model, plan, "host", graph)
    session = onnxruntime_session(model.onnx_model)
    for feed in feeds:
        expected = session.run(None, feed)[0]
        assert relative_error(built.run(feed)[0], expected) <= 0.05


def test_the_optimize_command_takes_calibration_and_accuracy_data(digits, digits_logs, tmp_path, capsys):
    import onnx

    from tvm_dse.cli import main

    task, _, _ = digits
    onnx.save(task.model, tmp_path / "digits.onnx")
    np.save(tmp_path / "calibration.npy", task.calibration)
    np.savez(tmp_path / "accuracy.npz", image=task.images[:60], labels=task.labels[:60])
    out = tmp_path / "out"
    # the plan timed once, without onnxruntime beside it: the host optimize tests time it in full
    assert main(["optimize", str(tmp_path / "digits.onnx"), "--logs", str(digits_logs), "--cold", "--verify", "1",
                 "--no-reference", "--no-profile", "--calibration-data", str(tmp_path / "calibration.npy"),
                 "--accuracy-data", str(tmp_path / "accuracy.npz"), "--max-accuracy-loss", "0.01",
                 "--out", str(out)]) == 0
    assert "top-1 " in capsys.readouterr().out
    plan = Plan.load(out / "plan.json")
    assert plan.provenance["calibration"]["batches"] == len(task.calibration)
    assert "## Accuracy" in (out / "report.md").read_text()
    np.savez(tmp_path / "unlabelled.npz", image=task.images[:4])
    assert main(["optimize", str(tmp_path / "digits.onnx"), "--calibration-data", str(tmp_path / "calibration.npy"),
                 "--accuracy-data", str(tmp_path / "unlabelled.npz"), "--out", str(out)]) == 2
    assert "no 'labels' array" in capsys.readouterr().err


def test_fp16_options_get_their_own_sensitivity(digits, digits_logs):
    task, _, _ = digits
    result = optimize(task.model, logs=digits_logs, shipped_logs=False, show_progress=False, verify=1, reference=False,
                      profile=False, compare_searchers=(), precisions=("fp32", "fp16"),
                      accuracy=AccuracyBound(task.images, task.labels, max_loss=0.005))
    sensitivity = result.report["accuracy"]["sensitivity"]["nodes"]
    # fp16 weights on this CPU (storage only): every conv with 16 or 32 output channels has an fp16 option
    assert {name: sorted(rows) for name, rows in sensitivity.items()} == {n: ["fp16"] for n in ("conv1", "conv2", "conv3")}
    assert result.report["accuracy"]["loss"] <= 0.005
    assert all(get_strategy(o.name).precision in ("fp32", "fp16") for n in result.space.nodes if n.is_tunable
               for o in n.options)
    with pytest.raises(TvmDseError, match="int8 needs calibration_data"):
        optimize(task.model, show_progress=False, precisions=("fp32", "int8"))
    with pytest.raises(TvmDseError, match="precisions must include fp32"):
        optimize(task.model, show_progress=False, precisions=("fp32", "bf16"))


def test_the_quantized_reference_computes_what_an_int8_plan_computes():
    """Against onnxruntime running the model with the plan's int8 nodes quantized and dequantized as the
    kernels do, the plan differs by fp32 rounding; against the fp32 model, by the quantization error."""
    from tvm_dse.testing.matrix import matrix_model, most_quantized_plan
    from tvm_dse.testing.quantized_reference import quantized_reference_model

    host = parse_target("host")
    model = load_model(matrix_model("concat_8"))
    graph = build_graph(model)
    plan = most_quantized_plan(model, graph, host)
    assert plan.reduced_precision_nodes()
    feed = model.random_feed(0)
    (output,) = build_plan(model, plan, host, graph).run(feed)
    (quantized,) = onnxruntime_session(quantized_reference_model(model, plan, host)).run(None, feed)
    (exact,) = onnxruntime_session(model.onnx_model).run(None, feed)
    assert relative_error(output, quantized) <= 1e-5 < 1e-3 <= relative_error(output, exact)
