#!/usr/bin/env bash
# `npm run build:cuda`: the CUDA variant of the native binary, sana.linux-x64-gnu-cuda.node, next to the
# CPU one (sana.linux-x64-gnu.node). The JS loader (src/native.ts) prefers it when a GPU is usable.
# Needs the toolchain from scripts/setup-cuda.sh (or SANA_CUDA_PREFIX pointing at one like it).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
prefix="${SANA_CUDA_PREFIX:-$repo/.cuda}"
[[ -f "$prefix/env.sh" ]] || { echo "build:cuda: no CUDA toolchain in $prefix — run 'bash scripts/setup-cuda.sh' first"; exit 1; }
# shellcheck source=/dev/null
source "$prefix/env.sh"

# candle's kernels are one PTX per build: compute_80 runs natively on A100 and JIT-compiled on H100/H200.
# Ours (crates/sana-core/kernels) are built for both compute_80 and compute_90 regardless.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
# Own target dir: other features and flags than the CPU build, which would otherwise rebuild each time.
export CARGO_TARGET_DIR="${SANA_CUDA_TARGET_DIR:-$repo/target/cuda}"
# Run time: cublas/curand/nvrtc from the wheel prefix beside the .node; a system CUDA 13 install is
# found by ld.so as usual. The driver (libcuda.so.1) always comes from the system.
if [[ "$prefix" == "$repo/.cuda" ]]; then rpath='$ORIGIN/.cuda/lib'; else rpath="$prefix/lib"; fi
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,$rpath"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# --no-js and a throwaway .d.ts: index.js/index.d.ts stay the ones `npm run build:native` generates.
npx napi build --platform --release --manifest-path crates/sana-node/Cargo.toml --package-json-path package.json \
  --features cuda --output-dir "$out" --no-js --dts index.d.ts
mv "$out/sana.linux-x64-gnu.node" "$repo/sana.linux-x64-gnu-cuda.node"
echo "build:cuda: wrote sana.linux-x64-gnu-cuda.node (needs at run time: libcuda.so.1 from the NVIDIA driver;"
echo "  libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13 from CUDA 13 — rpath $rpath)"
