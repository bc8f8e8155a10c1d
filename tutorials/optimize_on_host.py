"""Tutorial: optimize a CNN for this machine's CPU and deploy it.

tvm_dse measures every applicable implementation of every convolution on this CPU, searches for the
fastest combination (layout conversions included), builds it, checks it against TVM's default build and
writes the plan, the library and a report.

    python tutorials/optimize_on_host.py [MODEL] [OUT_DIR]      # MODEL: an ONNX file or zoo:NAME
"""

import sys

import numpy as np
import tvm
from tvm import relax

import tvm_dse
from tvm_dse.export import load_library, load_weights
from tvm_dse.report import latency_line

model = sys.argv[1] if len(sys.argv) > 1 else "zoo:resnet18"
out_dir = sys.argv[2] if len(sys.argv) > 2 else "tutorial_host"

# 1. Optimize: measure, search (Q-learning by default), build and time the best plans end to end, validate,
#    and time onnxruntime on the same model for comparison.
result = tvm_dse.optimize(model, target="host", out_dir=out_dir)
print(f"{result.model.name}: {latency_line(result.report)}")

# 2. The plan is plain JSON: one strategy (and its schedule decisions) per node.
for name, choice in list(result.plan.nodes.items())[:5]:
    print(f"  {name:30s} {choice.strategy}")

# 3. Run the optimized model in this process...
feed = result.model.random_feed(seed=1)
outputs = result.run(feed)

# 4. ...or load the exported library elsewhere with nothing but the TVM runtime: tvm.runtime.load_module(library)
#    (load_library is that call without the dozens of empty "Scope Loaded:" warnings TVM's runtime prints).
#    The library holds the weights too; main takes them after the inputs, as tensors viewing the library.
library = f"{out_dir}/{result.model.name}.{result.target.arch}.so"
vm = relax.VirtualMachine(load_library(library), tvm.cpu())
inputs = [tvm.runtime.tensor(feed[model_input.name]) for model_input in result.model.inputs]
reloaded = vm["main"](*inputs, *load_weights(library)).numpy()
assert np.array_equal(reloaded, outputs[0])
print(f"the exported library gives the same outputs; report: {out_dir}/report.md")
