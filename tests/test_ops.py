"""The one operator classification (tvm_dse.ops): every operator the frontend emits is classified, and the
DSE graph (what the search prices) and lowering (what is built) agree call by call on which operators pass
a layout through and which get the model's own layout."""

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_dse import build_graph, load_model
from tvm_dse.build import build_baseline
from tvm_dse.layouts import native_layout
from tvm_dse.lower import _PlanRewriter, build_plan
from tvm_dse.ops import OpClass, op_class, passes_layout, tensor_shape
from tvm_dse.plan import Plan
from tvm_dse.target import parse_target
from tvm_dse.testing import MODEL_NAMES, relative_error
from tvm_dse.testing.awkward import AWKWARD_NAMES, build_awkward_model

HOST = parse_target("host")
RELAX_MODULE = "relax_gates_and_adaptive_pool"


def _relax_module() -> tvm.IRModule:
    """What only a Relax module brings: conv -> relu -> a squeeze-excite gate (spatial mean, sigmoid,
    multiply: an activation broadcast along H and W) -> a gate broadcast along channels (a channel mean,
    multiply) -> adaptive average pooling to 2x2 -> conv."""
    rng = np.random.default_rng(0)
    w1 = relax.const(rng.standard_normal((32, 16, 3, 3)).astype("float32"))
    w2 = relax.const(rng.standard_normal((32, 32, 1, 1)).astype("float32"))
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 12, 12), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            y = builder.emit(relax.op.nn.relu(builder.emit(relax.op.nn.conv2d(x, w1, padding=1))))
            gate = builder.emit(relax.op.sigmoid(builder.emit(relax.op.mean(y, [2, 3], keepdims=True))))
            y = builder.emit(relax.op.multiply(y, gate))
            y = builder.emit(relax.op.multiply(y, builder.emit(relax.op.mean(y, [1], keepdims=True))))
            y = builder.emit(relax.op.nn.adaptive_avg_pool2d(y, (2, 2)))
            output = builder.emit_output(builder.emit(relax.op.nn.conv2d(y, w2)))
        builder.emit_func_output(output)
    return builder.get()


@pytest.fixture(scope="module")
def models(zoo):
    """Every zoo model (small: the same operators), every awkward model and the Relax module, imported."""
    loaded = {name: load_model(zoo(name)) for name in MODEL_NAMES}
    loaded.update({name: load_model(build_awkward_model(name)) for name in AWKWARD_NAMES})
    loaded[RELAX_MODULE] = load_model(_relax_module(), name=RELAX_MODULE)
    return loaded


def _bindings(model):
    return [b for block in model.mod["main"].body.blocks for b in block.bindings]


def _op_name(value):
    return value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else None


def test_every_operator_the_frontend_emits_is_classified(models):
    emitted = {_op_name(b.value) for model in models.values() for b in _bindings(model)} - {None}
    assert {"relax.nn.conv2d", "relax.add", "relax.concat", "relax.nn.adaptive_avg_pool2d"} <= emitted
    assert sorted(name for name in emitted if op_class(name) is None) == []


def test_adaptive_pooling_keeps_the_models_layout():
    # lowering has no rule rebuilding it in another layout, so pricing must not assume one
    assert op_class("relax.nn.adaptive_avg_pool2d") is OpClass.LAYOUT_FIXED


def test_graph_and_lowering_agree_on_every_call(models):
    """Under a plan of channel-blocked strategies, a call the graph keeps out of its vertices (layout
    transparent) is lowered in its activation's layout, and one the graph makes a ``fixed`` vertex is
    lowered in the model's own layout; joins meet in a layout that holds them."""
    discriminating = {"transparent": 0, "fixed": 0}
    for name, model in models.items():
        graph = build_graph(model)
        plan = Plan.uniform(model, graph, HOST, "spatial_pack_nchwc")
        rewriter = _PlanRewriter(model, graph, plan, HOST)
        rewriter.rewrite()
        vertices = {v.binding: v for v in graph.vertices if v.binding is not None}
        for index, binding in enumerate(_bindings(model)):
            vertex = vertices.get(index)
            if vertex is not None and vertex.is_tunable:
                continue
            value = binding.value
            lowered = rewriter.values[binding.var][1]
            operands = [f for a in getattr(value, "args", []) for f in (a.fields if isinstance(a, relax.Tuple) else [a])]
            arriving = [rewriter.values[a][1] for a in operands if a in rewriter.values]
            where = f"{name}: binding {index} ({_op_name(value)})"
            assert (vertex is None or vertex.kind == "join") == passes_layout(value), where
            if vertex is None:
                assert lowered == arriving[0], where
                discriminating["transparent"] += lowered != native_layout(tensor_shape(binding.var))
            elif vertex.kind == "fixed":
                assert lowered == native_layout(tensor_shape(binding.var)), where
                discriminating["fixed"] += any(layout != native_layout(tensor_shape(binding.var))
                                               for layout in arriving)
            else:
                assert vertex.holds(lowered), where
    # the plan's blocked layouts reach calls of both kinds, so a disagreement would have shown
    assert discriminating["transparent"] > 0 and discriminating["fixed"] > 0, discriminating


def test_a_relax_module_with_gates_and_adaptive_pooling_builds_as_tvm_computes_it(models):
    model = models[RELAX_MODULE]
    graph = build_graph(model)
    fixed = [v.op for v in graph.vertices if v.kind == "fixed"]
    assert fixed == ["relax.mean", "relax.multiply", "relax.nn.adaptive_avg_pool2d"]
    plan = Plan.uniform(model, graph, HOST, "spatial_pack_nchwc")
    feed = model.random_feed(seed=1)
    (output,) = build_plan(model, plan, HOST, graph).run(feed)
    (reference,) = build_baseline(model, HOST).run(feed)
    assert relative_error(output, reference) <= 1e-4
