#!/usr/bin/env bash
# Set up the emulated aarch64 board from scratch: a real aarch64 Python running TVM's RPC server under
# qemu user-mode emulation, plus the aarch64 cross compiler to build for it; then the execution profiler
# that runs on it (tvm_dse/core_model). Idempotent: a second run checks each and returns. Needs root
# (apt-get) and the Debian and PyPI registries.
#
#   scripts/setup_board.sh   # into $TVM_DSE_BOARD_DIR or ~/.cache/tvm_dse/board-aarch64, the profiler into
#                            # $TVM_DSE_PROFILER_DIR or ~/.cache/tvm_dse/profiler
#
# Layout of the board folder: sysroot/ (arm64 libc + Python 3.11 from Debian), site/ (aarch64 wheels of
# the same TVM as the host), python (the launcher: qemu-aarch64 running the sysroot's python3.11).
# The profiler folder: libblock_counts.so (the QEMU plugin, built from tvm_dse/core_model/block_counts.c
# against the plugin header of the installed qemu-user's own source package, kept in qemu-VERSION/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

board=${TVM_DSE_BOARD_DIR:-$HOME/.cache/tvm_dse/board-aarch64}
stamp_version=3  # bump when the contents below change, so old boards are rebuilt

# Host packages: qemu user-mode emulation and the cross toolchain (libc6-dev-arm64-cross gives crti.o).
host_packages=(
  "qemu-user=1:7.2+dfsg-7+deb12u18+b3"
  "gcc-aarch64-linux-gnu=4:12.2.0-3"
  "libc6-dev-arm64-cross=2.36-8cross1"
)
# The arm64 sysroot: Debian 12's Python 3.11 and the libraries it loads, unpacked without dpkg's
# dependency resolution (installing python3.11-minimal:arm64 would conflict with the host's python3).
sysroot_packages=(
  "libc6=2.36-9+deb12u14" "libgcc-s1=12.2.0-14+deb12u1" "libstdc++6=12.2.0-14+deb12u1"
  "gcc-12-base=12.2.0-14+deb12u1" "zlib1g=1:1.2.13.dfsg-1" "libexpat1=2.5.0-1+deb12u5"
  "libssl3=3.0.22-1~deb12u2" "libffi8=3.4.4-1" "libbz2-1.0=1.0.8-5+b1" "liblzma5=5.4.1-1+deb12u2"
  "libuuid1=2.38.1-5+deb12u3" "libcrypt1=1:4.4.33-2" "python3.11-minimal=3.11.2-6+deb12u9"
  "libpython3.11-minimal=3.11.2-6+deb12u9" "libpython3.11-stdlib=3.11.2-6+deb12u9"
)
# aarch64 wheels: the same TVM stack as the host (setup.py pins), and what TVM's RPC server imports.
wheels=(
  "apache-tvm==0.27.0.post1" "apache-tvm-ffi==0.1.15.post1" "numpy==2.4.6" "ml_dtypes==0.6.0"
  "typing_extensions==4.16.0" "psutil==7.2.2" "cloudpickle==3.1.2" "tornado==6.6.1"
)
stamp="$board/.complete"
wanted="$stamp_version ${host_packages[*]} ${sysroot_packages[*]} ${wheels[*]}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian replaces a package's version when it ships a security fix; fall back to the current one then,
# and say so, rather than fail a fresh machine.
install_pinned() {
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    echo "warning: pinned versions not available ($*); installing the current ones" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${@%%=*}" >/dev/null
  fi
}
download_pinned() {  # NAME=VERSION, as arm64
  local name=${1%%=*} version=${1#*=}
  if ! apt-get download -qq -o APT::Sandbox::User=root "$name:arm64=$version" 2>/dev/null; then
    echo "warning: $name:arm64=$version not available; downloading the current version" >&2
    apt-get download -qq -o APT::Sandbox::User=root "$name:arm64"
  fi
}

setup_board() {
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && command -v qemu-aarch64 >/dev/null \
     && command -v aarch64-linux-gnu-gcc >/dev/null; then
    echo "emulated board ready in $board"
    return
  fi
  local start
  start=$(date +%s)
  echo "setting up the emulated aarch64 board in $board"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    as_root dpkg --add-architecture arm64
  fi
  as_root apt-get update -qq
  install_pinned "${host_packages[@]}"

  rm -rf "$board.partial"
  mkdir -p "$board.partial/debs" "$board.partial/sysroot" "$board.partial/wheels" "$board.partial/site"
  (
    cd "$board.partial/debs"
    for package in "${sysroot_packages[@]}"; do download_pinned "$package"; done
    for deb in *.deb; do dpkg -x "$deb" ../sysroot; done
  )
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
    --python-version 3.11 --implementation cp --dest "$board.partial/wheels" "${wheels[@]}"
  python3 - "$board.partial/wheels" "$board.partial/site" <<'PY'
import sys, zipfile, pathlib
wheels, site = map(pathlib.Path, sys.argv[1:])
for wheel in sorted(wheels.glob("*.whl")):
    zipfile.ZipFile(wheel).extractall(site)
PY
  # The board only runs compiled modules: TVM's compiler library (240 MB) stays on the host.
  rm -f "$board.partial"/site/tvm/lib/libtvm_compiler.so
  rm -rf "$board.partial/debs" "$board.partial/wheels"

  # The launcher is the board's python: `-0` makes qemu report the launcher as argv[0], so when TVM's RPC
  # server re-executes sys.executable for its worker it goes through qemu again (there is no binfmt_misc).
  cat > "$board.partial/python" <<SH
#!/bin/sh
here=\$(cd "\$(dirname "\$0")" && pwd)
export PYTHONHOME="\$here/sysroot/usr" PYTHONPATH="\$here/site" TVM_USE_RUNTIME_LIB=1 PYTHONNOUSERSITE=1
exec qemu-aarch64 -L "\$here/sysroot" -0 "\$here/python" "\$here/sysroot/usr/bin/python3.11" "\$@"
SH
  chmod +x "$board.partial/python"
  "$board.partial/python" -c "import tvm, numpy; print('board python:', tvm.__version__, 'numpy', numpy.__version__)"

  rm -rf "$board"
  mv "$board.partial" "$board"
  echo "$wanted" > "$stamp"
  echo "emulated board ready in $board ($(( $(date +%s) - start )) s)"
}

# The execution profiler (tvm_dse/core_model): LLVM 19's machine-code tools and the QEMU plugin.
profiler=${TVM_DSE_PROFILER_DIR:-$HOME/.cache/tvm_dse/profiler}
profiler_stamp_version=1  # bump when the steps below change
llvm_packages=("llvm-19=1:19.1.7-3~deb12u1")
plugin_source="$root/tvm_dse/core_model/block_counts.c"

setup_profiler() {
  # the plugin header must come from the same QEMU as the emulator that loads the plugin
  local qemu_version wanted_profiler header_dir
  qemu_version=$(dpkg-query -W -f='${source:Version}' qemu-user)
  wanted_profiler="$profiler_stamp_version ${llvm_packages[*]} qemu=$qemu_version $(sha256sum < "$plugin_source")"
  if [ -f "$profiler/.complete" ] && [ "$(cat "$profiler/.complete")" = "$wanted_profiler" ] \
     && command -v llvm-mca-19 >/dev/null; then
    echo "execution profiler ready in $profiler"
    return
  fi
  echo "setting up the execution profiler in $profiler"
  install_pinned "${llvm_packages[@]}"
  header_dir="$profiler/qemu-${qemu_version//[:+~]/_}"
  if [ ! -f "$header_dir/qemu-plugin.h" ]; then
    # Debian's qemu packages ship no plugin header: take it from QEMU's source package, through source
    # entries made from the machine's own binary entries where it has none
    if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      for list in /etc/apt/sources.list.d/*.sources; do
        [ -f "$list" ] && sed 's/^Types: deb$/Types: deb-src/' "$list" | as_root tee "${list%.sources}-tvm-dse-src.sources" >/dev/null
      done
      for list in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$list" ] && sed -n 's/^deb /deb-src /p' "$list" | as_root tee "${list%.list}-tvm-dse-src.list" >/dev/null
      done
    fi
    as_root apt-get update -qq
    local work
    work=$(mktemp -d)
    (cd "$work" && apt-get source --download-only -qq -o APT::Sandbox::User=root "qemu=$qemu_version" >/dev/null \
      && tar -xJf qemu_*.orig.tar.xz --wildcards '*/include/qemu/qemu-plugin.h')
    mkdir -p "$header_dir"
    cp "$work"/qemu-*/include/qemu/qemu-plugin.h "$header_dir/"
    rm -rf "$work"
  fi
  gcc -O2 -shared -fPIC -Wall -Wextra -Wno-unused-parameter -I "$header_dir" "$plugin_source" \
    -o "$profiler/libblock_counts.so"
  echo "$wanted_profiler" > "$profiler/.complete"
  echo "execution profiler ready in $profiler"
}

setup_board
setup_profiler
