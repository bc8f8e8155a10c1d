"""The DSE graph: tunable nodes with their workloads, edges through transparent ops, joins."""

import pytest

from tvm_dse import DseGraph, Workload, build_graph, load_model


def _conv(c, hw, k, r, s, p):
    return Workload("conv2d", 1, c, hw, hw, k, kernel=(r, r), stride=(s, s), padding=(p,) * 4)


# ResNet-18's convolutions in order, from the architecture (He et al. 2016, torchvision's layout).
RESNET18_CONVS = [
    ("conv1", _conv(3, 224, 64, 7, 2, 3)),
    *[(f"layer1.{b}.conv{i}", _conv(64, 56, 64, 3, 1, 1)) for b in (0, 1) for i in (1, 2)],
    ("layer2.0.conv1", _conv(64, 56, 128, 3, 2, 1)), ("layer2.0.conv2", _conv(128, 28, 128, 3, 1, 1)),
    ("layer2.0.downsample.conv", _conv(64, 56, 128, 1, 2, 0)),
    ("layer2.1.conv1", _conv(128, 28, 128, 3, 1, 1)), ("layer2.1.conv2", _conv(128, 28, 128, 3, 1, 1)),
    ("layer3.0.conv1", _conv(128, 28, 256, 3, 2, 1)), ("layer3.0.conv2", _conv(256, 14, 256, 3, 1, 1)),
    ("layer3.0.downsample.conv", _conv(128, 28, 256, 1, 2, 0)),
    ("layer3.1.conv1", _conv(256, 14, 256, 3, 1, 1)), ("layer3.1.conv2", _conv(256, 14, 256, 3, 1, 1)),
    ("layer4.0.conv1", _conv(256, 14, 512, 3, 2, 1)), ("layer4.0.conv2", _conv(512, 7, 512, 3, 1, 1)),
    ("layer4.0.downsample.conv", _conv(256, 14, 512, 1, 2, 0)),
    ("layer4.1.conv1", _conv(512, 7, 512, 3, 1, 1)), ("layer4.1.conv2", _conv(512, 7, 512, 3, 1, 1)),
]


@pytest.fixture(scope="module")
def resnet18_graph(zoo):
    return build_graph(load_model(zoo("resnet18", small=False)))


def test_resnet18_has_20_convs_and_one_dense_with_their_workloads(resnet18_graph):
    nodes = resnet18_graph.nodes
    convs = [v for v in nodes if v.kind == "conv2d"]
    dense = [v for v in nodes if v.kind == "dense"]
    assert len(convs) == 20 and len(dense) == 1
    assert sorted((v.name, v.workload) for v in convs) == sorted(RESNET18_CONVS)
    assert dense[0].name == "fc" and dense[0].workload == Workload.dense(1, 512, 1000)
    assert len([w for w in resnet18_graph.workloads() if w.op == "conv2d"]) == 11
    assert resnet18_graph.flops == pytest.approx(3.63e9, rel=0.005)


def test_resnet18_edges_and_residual_joins(resnet18_graph):
    graph = resnet18_graph
    ids = {v.name: v.id for v in graph.vertices}
    assert len(graph.joins) == 8
    assert all(v.op == "relax.add" and len(v.inputs) == 2 for v in graph.joins)
    # first block: identity shortcut from the stem (through relu + max pool) joins the block's second conv
    assert graph.vertices[ids["layer1.0.conv1"]].inputs == [ids["conv1"]]
    assert graph.joins[0].inputs == sorted([ids["conv1"], ids["layer1.0.conv2"]])
    # second block: its shortcut is the first join
    assert graph.joins[1].inputs == sorted([graph.joins[0].id, ids["layer1.1.conv2"]])
    # a downsampling block: both its convs read the previous join; the join ties conv2 and the downsample
    previous = graph.joins[1].id
    assert graph.vertices[ids["layer2.0.conv1"]].inputs == [previous]
    assert graph.vertices[ids["layer2.0.downsample.conv"]].inputs == [previous]
    assert graph.joins[2].inputs == sorted([ids["layer2.0.conv2"], ids["layer2.0.downsample.conv"]])
    # the classifier reads a layout-fixed reshape after the global pool of the last join
    fc = graph.node("fc")
    (reshape,) = fc.inputs
    assert graph.vertices[reshape].kind == "fixed" and graph.vertices[reshape].inputs == [graph.joins[-1].id]
    assert graph.vertices[-1].kind == "output" and graph.vertices[-1].inputs == [fc.id]
    assert graph.vertices[0].kind == "input" and graph.vertices[ids["conv1"]].inputs == [0]


def test_ids_are_a_topological_order(resnet18_graph):
    for vertex in resnet18_graph.vertices:
        assert all(source < vertex.id for source in vertex.inputs)
    assert set(resnet18_graph.edges) == {(s, v.id) for v in resnet18_graph.vertices for s in v.inputs}


def test_save_and_load_round_trip(resnet18_graph, tmp_path):
    path = tmp_path / "graph.json"
    resnet18_graph.save(path)
    loaded = DseGraph.load(path)
    assert loaded.to_dict() == resnet18_graph.to_dict()
    assert loaded.workloads() == resnet18_graph.workloads()


def test_loading_a_graph_out_of_order_fails(resnet18_graph):
    data = resnet18_graph.to_dict()
    data["vertices"][1]["inputs"] = [5]
    with pytest.raises(ValueError, match="topological"):
        DseGraph.from_dict(data)


@pytest.mark.parametrize("name, convs, dense, joins, join_op", [
    ("mobilenet_v2", 52, 1, 10, "relax.add"),
    ("squeezenet1_1", 26, 0, 8, "relax.concat"),
    ("vgg16", 13, 3, 0, None),
    ("mobilenet_v1", 27, 1, 0, None),
    ("resnet50", 53, 1, 16, "relax.add"),
])
def test_other_zoo_graphs(zoo, name, convs, dense, joins, join_op):
    graph = build_graph(load_model(zoo(name)))
    assert sum(v.kind == "conv2d" for v in graph.nodes) == convs
    assert sum(v.kind == "dense" for v in graph.nodes) == dense
    assert len(graph.joins) == joins
    assert all(j.op == join_op for j in graph.joins)
    assert all(len(j.inputs) >= 2 for j in graph.joins)


def test_depthwise_workloads_are_marked(zoo):
    graph = build_graph(load_model(zoo("mobilenet_v2")))
    depthwise = [v for v in graph.nodes if v.workload.is_depthwise]
    assert len(depthwise) == 17
    assert all(v.workload.groups == v.workload.in_channels == v.workload.out_channels for v in depthwise)
