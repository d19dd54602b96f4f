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
# Target dir: by default the CPU build's (the dependencies both builds share compile once; the
# cuda-featured crates get their own artifacts). CI points SANA_CUDA_TARGET_DIR at a cache outside the
# clone: candle-kernels' build script (all of candle's kernels through nvcc, ~20 min on 2 cores) then
# runs once, while our crates and kernels still recompile whenever they change.
# (crates/sana-node/build.rs adds the rpath $ORIGIN/.cuda/lib.)
export CARGO_TARGET_DIR="${SANA_CUDA_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target}}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# --no-js and a throwaway .d.ts: index.js/index.d.ts stay the ones `npm run build:native` generates.
npx napi build --platform --release --manifest-path crates/sana-node/Cargo.toml --package-json-path package.json \
  --features cuda --output-dir "$out" --no-js --dts index.d.ts
mv "$out/sana.linux-x64-gnu.node" "$repo/sana.linux-x64-gnu-cuda.node"
echo "build:cuda: wrote sana.linux-x64-gnu-cuda.node (needs at run time: libcuda.so.1 from the NVIDIA driver;"
echo "  libcublas.so.13 + libcublasLt.so.13, libcurand.so.10, libcudart.so.13 from CUDA 13, found via"
echo "  LD_LIBRARY_PATH, the system, or .cuda/lib beside the .node)"
