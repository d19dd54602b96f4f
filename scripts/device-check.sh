#!/usr/bin/env bash
# On a GPU machine without network, from the bundle scripts/device-bundle.sh wrote into .dev/, in order of
# value, each part skipped (and said so) once the time budget would not cover it:
#   1. the CUDA op tests (Rust, each kernel against its CPU twin in f32/f16/bf16), with the default device
#      set-up and again with the NEW settings below;
#   2. the per-op-group timing of one Sana-600M block (examples/time_dit_step_cuda, DiT batch 2 and 32):
#      OLD, each new switch alone, then all NEW settings;
#   3. the CUDA end-to-end tests (__test__/cuda.spec.mjs on the fixture pipeline): NEW, then OLD;
#   4. repeatability (scripts/cuda-repeatability.mjs, NEW) and the GPU benchmark (benches/gpu.mjs --compare,
#      ours with NEW).
# OLD = the defaults; NEW = $SANA_NEW_ENV (default: every fused kernel, no event tracking, pool kept).
# Logs, the timing tables and the benchmark JSON go to $OUT (default /tmp/sana-device-out). Each part runs
# even when an earlier one fails; exit status = failures.
#   bash scripts/device-check.sh [ops|tests|bench|all]   (default all; ops = parts 1–2, tests = 1–3,
#   bench = 4). SANA_DEVICE_BUDGET: seconds for the whole run (default 510, under the 9-minute target).
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
unxz_to .dev/bin.tar.xz | tar -xf - -C "$dev"  # sana.linux-x64-gnu-cuda.node, sana_core_tests, time_dit_step_cuda
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

new_env=(${SANA_NEW_ENV:-SANA_CUDA_FUSED=all SANA_CUDA_EVENT_TRACKING=0 SANA_CUDA_POOL_KEEP=1})
budget="${SANA_DEVICE_BUDGET:-510}"
echo "NEW = ${new_env[*]}" | tee "$out/settings.txt"
failures=0
# fits SECONDS: whether a part expected to take SECONDS still fits in the budget (else says it is skipped).
fits() {
  local left=$((budget - ($(date +%s) - t0)))
  ((left >= $1)) && return 0
  echo "== SKIPPED (budget): needs ~$1 s, $left s left" | tee -a "$out/skipped.txt"
  return 1
}
# with SETTING CMD...: CMD under OLD (the defaults), NEW, or one VAR=value.
with() {
  local setting=$1
  shift
  case "$setting" in
    OLD) "$@" ;;
    NEW) env "${new_env[@]}" "$@" ;;
    *) env "$setting" "$@" ;;
  esac
}

if [[ "$what" != bench ]]; then
  for setting in OLD NEW; do
    stamp "1. CUDA op tests, $setting device set-up"
    with "$setting" "$dev/sana_core_tests" ops::cuda --test-threads=1 2>&1 | tee "$out/rust-ops-${setting,,}.log"
    ((PIPESTATUS[0] == 0)) || failures=$((failures + 1))
  done
  # 2. One block, op group by op group: OLD, each switch alone, NEW. ~5 s each (start-up, PTX JIT, 11 runs).
  for setting in OLD SANA_CUDA_FUSED=softmax SANA_CUDA_FUSED=adaln SANA_CUDA_FUSED=residual SANA_CUDA_FUSED=mixffn \
    SANA_CUDA_FUSED=all \
    SANA_CUDA_EVENT_TRACKING=0 SANA_CUDA_POOL_KEEP=1 NEW; do
    fits 15 || break
    stamp "2. block timing: $setting"
    with "$setting" "$dev/time_dit_step_cuda" "${SANA_TIMING_RUNS:-10}" 2,32 bfloat16 2>&1 | tee -a "$out/timing.log"
    ((PIPESTATUS[0] == 0)) || failures=$((failures + 1))
  done
fi
if [[ "$what" == tests || "$what" == all ]]; then
  for setting in NEW OLD; do
    fits 90 || break
    stamp "3. CUDA end-to-end tests (ava __test__/cuda.spec.mjs), $setting"
    with "$setting" node node_modules/ava/entrypoints/cli.mjs __test__/cuda.spec.mjs --verbose 2>&1 | tee "$out/ava-cuda-${setting,,}.log"
    ((PIPESTATUS[0] == 0)) || failures=$((failures + 1))
  done
fi
if [[ "$what" == bench || "$what" == all ]] && fits 150; then
  stamp "4. repeatability, NEW (scripts/cuda-repeatability.mjs on the random-weight Sana-600M, bf16)"
  pipeline="$(SANA_BENCH_CACHE=/tmp/sana-bench node benches/gpu.mjs --prepare --python python3 | tail -1)"
  with NEW timeout "${SANA_REPEAT_TIMEOUT:-120}" node scripts/cuda-repeatability.mjs "$pipeline" bfloat16 20 2>&1 | tee "$out/repeat.log"
  ((PIPESTATUS[0] == 0)) || failures=$((failures + 1))
fi
if [[ "$what" == bench || "$what" == all ]] && fits 150; then
  stamp "4. GPU benchmark (benches/gpu.mjs --compare), ours with NEW"
  left=$((budget - ($(date +%s) - t0)))
  # Two implementations share what is left (the benchmark's deadline is per implementation).
  deadline=$(( (left - 30) / 2 < ${SANA_BENCH_DEADLINE:-120} ? (left - 30) / 2 : ${SANA_BENCH_DEADLINE:-120} ))
  with NEW env SANA_BENCH_CACHE=/tmp/sana-bench node benches/gpu.mjs ${SANA_BENCH_COMPARE---compare} --python python3 --no-record \
    --deadline "$deadline" 2>&1 | tee "$out/bench.log"
  ((PIPESTATUS[0] == 0)) || failures=$((failures + 1))
  cp benches/out/*-gpu.json "$out/" 2>/dev/null
fi
grep -h '^JSON ' "$out/timing.log" 2>/dev/null >"$out/timing.jsonl"
stamp "done: $failures part(s) failed"
exit "$failures"
