#!/usr/bin/env bash
# On a GPU machine without network, from the bundle scripts/device-bundle.sh wrote into .dev/: the CUDA op
# tests (Rust, each op against its CPU implementation), the CUDA end-to-end tests (__test__/cuda.spec.mjs on
# the fixture pipeline) and the GPU benchmark (benches/gpu.mjs --compare). Logs and the benchmark JSON go to
# $OUT (default /tmp/sana-device-out). Each part runs even when an earlier one fails; exit status = failures.
#   bash scripts/device-check.sh [tests|bench|all]   (default all; bench includes the repeatability check)
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
what="${1:-all}"
out="${OUT:-/tmp/sana-device-out}"
dev=/tmp/sana-dev
mkdir -p "$out" "$dev/fx" "$dev/site"
t0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - t0)) s] $*"; }
# xz through Python's lzma: the image need not have the xz tool.
unxz_to() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; }

stamp unpack
if [[ ! -x "$dev/node" ]]; then
  unxz_to .dev/node.xz >"$dev/node" && chmod +x "$dev/node"
  unxz_to .dev/fixtures.tar.xz | tar -xf - -C "$dev/fx"
  unxz_to .dev/site.tar.xz | tar -xf - -C "$dev/site"
fi
unxz_to .dev/js.tar.xz | tar -xf - -C "$repo"
unxz_to .dev/bin.tar.xz | tar -xf - -C "$dev"
cp "$dev/sana.linux-x64-gnu-cuda.node" "$repo/"
export PATH="$dev:$PATH" PYTHONPATH="$dev/site${PYTHONPATH:+:$PYTHONPATH}" SANA_FIXTURES="$dev/fx" SANA_NODE_BINARY=cuda
# The CUDA 13 libraries the binary links (cuBLAS, cuRAND, cudart): wherever the image's wheels put them.
LD_LIBRARY_PATH="$(python3 - <<'EOF'
import glob, os, site
names = ["libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcudart.so.13"]
roots = site.getsitepackages() + ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
print(":".join(sorted({os.path.dirname(f) for r in roots for n in names for f in glob.glob(os.path.join(r, "**", n), recursive=True)})))
EOF
)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
echo "node $(node --version); LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

failures=0
if [[ "$what" != bench ]]; then
  stamp "CUDA op tests (Rust: ops::cuda, each against the CPU implementation)"
  "$dev/sana_core_tests" ops::cuda --test-threads=1 2>&1 | tee "$out/rust-ops.log" || failures=$((failures + 1))
  stamp "CUDA end-to-end tests (ava __test__/cuda.spec.mjs)"
  node node_modules/ava/entrypoints/cli.mjs __test__/cuda.spec.mjs --verbose 2>&1 | tee "$out/ava-cuda.log" || failures=$((failures + 1))
fi
if [[ "$what" != tests ]]; then
  stamp "repeatability (scripts/cuda-repeatability.mjs on the random-weight Sana-600M, bf16)"
  pipeline="$(SANA_BENCH_CACHE=/tmp/sana-bench node benches/gpu.mjs --prepare --python python3 | tail -1)"
  timeout "${SANA_REPEAT_TIMEOUT:-150}" node scripts/cuda-repeatability.mjs "$pipeline" bfloat16 20 2>&1 | tee "$out/repeat.log" ||
    failures=$((failures + 1))
fi
if [[ "$what" != tests ]]; then
  stamp "GPU benchmark (benches/gpu.mjs --compare)"
  SANA_BENCH_CACHE=/tmp/sana-bench node benches/gpu.mjs ${SANA_BENCH_COMPARE---compare} --python python3 --no-record \
    --deadline "${SANA_BENCH_DEADLINE:-120}" 2>&1 | tee "$out/bench.log" || failures=$((failures + 1))
  cp benches/out/*-gpu.json "$out/" 2>/dev/null
fi
stamp "done: $failures part(s) failed"
exit "$failures"
