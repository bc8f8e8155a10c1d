#!/usr/bin/env bash
# Print this machine's CPU model and the vector features tvm_dse's kernels depend on (present or absent).
set -euo pipefail
field() { grep -m1 "^$1[[:space:]]*:" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
model=$(field "model name")
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-) "
present=() absent=()
for feature in sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx_vnni avx512_bf16 avx512_fp16 \
               amx_tile amx_int8 amx_bf16; do
  if [[ $flags == *" $feature "* ]]; then present+=("$feature"); else absent+=("$feature"); fi
done
echo "CPU: ${model:-unknown} (vendor $(field vendor_id), family $(field "cpu family"), model $(field model)," \
     "$(nproc) cores)"
echo "vector features: ${present[*]:-none}"
echo "absent: ${absent[*]:-none}"
