"""Tutorial: trade latency for memory.

Some strategies are fast but big (Winograd keeps 4x larger transformed weights; im2col needs a large
workspace). The exact solver finds the fastest plan under a peak-memory bound, and sweeping the bound
gives the latency/memory Pareto front.

    python tutorials/memory_bounded.py [MODEL] [OUT_DIR]
"""

import sys

import tvm_dse
from tvm_dse.search import pareto_front

model = sys.argv[1] if len(sys.argv) > 1 else "zoo:resnet18"
out_dir = sys.argv[2] if len(sys.argv) > 2 else "tutorial_memory"

# 1. Unbounded: the fastest plan and the whole front (the space is measured once, then reused).
fastest = tvm_dse.optimize(model, target="host", searcher="exact", out_dir=f"{out_dir}/fastest")
front = pareto_front(fastest.space)
print("latency/memory Pareto front:")
for point in front:
    print(f"  {point.cost_ms:8.3f} ms  {point.peak_memory_bytes / 2**20:8.1f} MB")

# 2. Bounded: ask for a plan no larger than the front's smallest point, halfway to the fastest one.
smallest, largest = front[0].peak_memory_bytes, front[-1].peak_memory_bytes
limit_mb = (smallest + (largest - smallest) / 2) / 2**20
bounded = tvm_dse.optimize(model, target="host", searcher="exact", memory_limit=limit_mb,
                           out_dir=f"{out_dir}/bounded")
peak_mb = bounded.report["peak_memory_mb"]
print(f"bound {limit_mb:.1f} MB -> plan of {peak_mb:.1f} MB, {bounded.report['latency']['median_ms']:.3f} ms "
      f"(fastest: {fastest.report['peak_memory_mb']:.1f} MB, {fastest.report['latency']['median_ms']:.3f} ms)")
assert peak_mb <= limit_mb + 1e-9
