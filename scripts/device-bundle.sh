#!/usr/bin/env bash
# Packs what a GPU machine with no network needs to run the CUDA checks (scripts/device-check.sh) into .dev/
# (git-ignored, so the device tool must carry it: `carry: [".dev"]`): node itself, ava and its dependencies,
# the built CUDA binary, the Rust op-test binary and block-timing example (stripped), the compiled dist/,
# the fixture pipeline with only the e2e case the CUDA tests use, and diffusers for the PyTorch side of the
# GPU benchmark. Compressed with xz to fit the device tool's 64 MiB transfer limit. Run after
# `npm run build` and `npm run build:cuda` (with the same SANA_CUDA_PREFIX / SANA_CUDA_TARGET_DIR).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
fixtures="${SANA_FIXTURES:-$repo/../shared/fixtures}"
out="$repo/.dev"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out" && mkdir -p "$out"
xzc() { xz -T2 -9e -c; }

echo "node $(node --version)"
xzc <"$(readlink -f "$(command -v node)")" >"$out/node.xz"

# ava and everything it requires, resolved as Node does (a package's own node_modules first, then upwards).
node -e '
  const fs = require("fs"), path = require("path"), seen = new Set()
  const find = (from, name) => {
    for (let dir = from; ; dir = path.dirname(dir)) {
      const p = path.join(dir, "node_modules", name)
      if (fs.existsSync(path.join(p, "package.json"))) return p
      if (dir === "." || dir === path.dirname(dir)) return null
    }
  }
  const walk = (dir) => {
    if (!dir || seen.has(dir)) return
    seen.add(dir)
    const j = JSON.parse(fs.readFileSync(path.join(dir, "package.json")))
    for (const d of Object.keys({ ...j.dependencies, ...j.optionalDependencies })) walk(find(dir, d))
  }
  walk(find(".", "ava"))
  console.log([...seen].map((d) => path.relative(".", d)).join("\n"))' >"$tmp/ava-files"
tar -cf - -T "$tmp/ava-files" dist index.js package.json | xzc >"$out/js.tar.xz"

# Binaries: the CUDA .node, the sana-core unit-test binary built with --features cuda (ops::cuda tests) and
# the block-timing example (examples/time_dit_step_cuda.rs). Both are (re)built here with the flags CI's
# CUDA step uses (--workspace --features cuda, the CUDA target dir), so they reuse build:cuda's artifacts;
# their paths come from cargo's own report, not from guessing the newest file.
cuda_prefix="${SANA_CUDA_PREFIX:-$repo/.cuda}"
host="$(rustc -vV | sed -n 's/^host: //p')"
artifacts() {
  (source "$cuda_prefix/env.sh" && CARGO_TARGET_DIR="${SANA_CUDA_TARGET_DIR:-$repo/target}" \
    cargo "$@" --release --target "$host" --workspace --features cuda --message-format=json) |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("sana_core", "time_dit_step_cuda"):
        print(m["target"]["name"], m["executable"])'
}
{ artifacts test --no-run --lib && artifacts build --example time_dit_step_cuda; } >"$tmp/artifacts"
cat "$tmp/artifacts"
cp sana.linux-x64-gnu-cuda.node "$tmp/" && strip "$tmp/sana.linux-x64-gnu-cuda.node"
cp "$(awk '$1 == "sana_core" { print $2 }' "$tmp/artifacts")" "$tmp/sana_core_tests" && strip "$tmp/sana_core_tests"
cp "$(awk '$1 == "time_dit_step_cuda" { print $2 }' "$tmp/artifacts")" "$tmp/time_dit_step_cuda" && strip "$tmp/time_dit_step_cuda"
tar -cf - -C "$tmp" sana.linux-x64-gnu-cuda.node sana_core_tests time_dit_step_cuda | xzc >"$out/bin.tar.xz"

# The fixture pipeline; reference.safetensors cut down to the e2e_a_cfg tensors (the manifest is unchanged).
mkdir -p "$tmp/fx" && cp -r "$fixtures/sana-tiny" "$tmp/fx/" && chmod -R u+w "$tmp/fx" && rm -f "$tmp"/fx/sana-tiny/reference/*.png
python3 - "$fixtures/sana-tiny/reference/reference.safetensors" "$tmp/fx/sana-tiny/reference/reference.safetensors" <<'EOF'
import json, struct, sys
src, dst = sys.argv[1:]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header, base = json.loads(raw[8:8 + n]), 8 + n
out, data = {}, bytearray()
for k, v in header.items():
    if k.startswith("e2e_a_cfg/"):
        s, e = v["data_offsets"]
        out[k] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": [len(data), len(data) + e - s]}
        data += raw[base + s:base + e]
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + data)
EOF
tar -cf - -C "$tmp/fx" sana-tiny | xzc >"$out/fixtures.tar.xz"

# diffusers (and importlib_metadata, which it requires and the device image lacks) for Python 3.12.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d "$tmp/whl" diffusers==0.42.1 importlib_metadata==10.2.0
mkdir -p "$tmp/site" && for w in "$tmp"/whl/*.whl; do (cd "$tmp/site" && python3 -m zipfile -e "$w" .); done
tar -cf - -C "$tmp/site" . | xzc >"$out/site.tar.xz"
du -ch "$out"/* | tail -n 20
