"""Train the digits CNN shipped in ``tvm_dse/testing/data/``: a real task with real accuracy, no download.

scikit-learn bundles the UCI handwritten digits (1797 images, 8x8, ten classes). A seeded stratified
split keeps 20% for testing; a small CNN (conv 3x3 1->16, relu, conv 3x3 16->32, relu, max pool 2, conv
3x3 32->32, relu, flatten, linear 512->10) is trained with PyTorch, written as ONNX (batch 1, fp32) with
its trained weights, and checked against onnxruntime on the test split. Writes ``digits_cnn.onnx`` and
``digits_test.npz`` (``images`` N x 1 x 8 x 8 float32 in [0, 1], ``labels`` int64, and ``calibration``: the
first training images, for calibrating quantized plans on data the test split does not hold).

    pip install torch scikit-learn   # only to regenerate; the tests use the shipped files
    python scripts/train_digits.py [--epochs 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DATA = Path(__file__).resolve().parents[1] / "tvm_dse" / "testing" / "data"
CALIBRATION_IMAGES = 100


def _onnx_model(layers: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The trained network as ONNX, its weights as initializers."""
    nodes = []
    initializers = [numpy_helper.from_array(value.astype(np.float32), name) for name, value in layers.items()]

    def conv(name: str, x: str) -> str:
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv("conv1", "image")
    x = conv("conv2", x)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]))
    x = conv("conv3", "pool")
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flat", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "digits_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tvm_dse train_digits")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import onnxruntime
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    train_x, test_x, train_y, test_y = train_test_split(images, digits.target.astype(np.int64), test_size=0.2,
                                                        stratify=digits.target, random_state=args.seed)
    torch.manual_seed(args.seed)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(512, 10))
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    inputs, targets = torch.from_numpy(train_x), torch.from_numpy(train_y)
    for _ in range(args.epochs):
        for batch in torch.randperm(len(inputs)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(network(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    network.eval()
    with torch.no_grad():
        torch_top1 = float((network(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())

    names = {0: "conv1", 2: "conv2", 5: "conv3", 8: "fc"}
    layers = {f"{name}.{kind}": getattr(network[index], kind).detach().numpy()
              for index, name in names.items() for kind in ("weight", "bias")}
    model = _onnx_model(layers)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    predicted = np.array([session.run(None, {"image": image[None]})[0].argmax() for image in test_x])
    onnx_top1 = float((predicted == test_y).mean())
    if abs(onnx_top1 - torch_top1) > 1e-9:
        raise SystemExit(f"the ONNX model disagrees with the trained network: top-1 {onnx_top1} vs {torch_top1}")
    DATA.mkdir(parents=True, exist_ok=True)
    onnx.save(model, DATA / "digits_cnn.onnx")
    np.savez_compressed(DATA / "digits_test.npz", images=test_x, labels=test_y,
                        calibration=train_x[:CALIBRATION_IMAGES])
    print(f"test top-1 {onnx_top1:.4f} on {len(test_y)} images; wrote {DATA / 'digits_cnn.onnx'}, "
          f"{DATA / 'digits_test.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
