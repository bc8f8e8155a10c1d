"""Tutorial: optimize for a 64-bit Arm board reached through a TVM RPC tracker.

Every kernel is cross-compiled here and measured on the board; the chosen plan is validated on the board
against TVM's default build run here. Without a physical board, the project's emulated one stands in
(real aarch64 code under qemu; its timings say nothing about Arm speed, only that the path works):

    scripts/setup_board.sh && tvm-dse board up --boards 2 --tracker-port 9190
    python tutorials/optimize_for_a_board.py [MODEL] [OUT_DIR] [TRACKER] [KEY]
    tvm-dse board down
"""

import sys

import tvm_dse

model = sys.argv[1] if len(sys.argv) > 1 else "zoo:mobilenet_v2-small"
out_dir = sys.argv[2] if len(sys.argv) > 2 else "tutorial_board"
tracker = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:9190"
key = sys.argv[4] if len(sys.argv) > 4 else "qemu-aarch64"

# A Raspberry Pi 4 class target; any TVM aarch64 target string works too.
result = tvm_dse.optimize(model, target="rpi4", rpc={"tracker": tracker, "key": key}, out_dir=out_dir)
report = result.report
print(f"plan for {report['target_key']}: measured on {result.plan.metrics['measured_on']}, outputs match "
      f"TVM's default build (relative error {report['validation']['relative_error_vs_tvm_default']:.1e})")
print(f"deploy {out_dir}/{result.model.name}.aarch64.so with the TVM runtime on the board")
