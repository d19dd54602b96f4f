#!/usr/bin/env bash
# PyTorch + diffusers + transformers into benches/.venv, for `npm run bench -- --compare`.
#
# Which torch: only pypi.org is reachable here (no --index-url for PyTorch's own CPU index), and PyPI has no
# CPU-only build for linux x86_64: its default wheel (~540 MB) is the CUDA build, and it cannot be installed
# with --no-deps alone: `import torch` then fails preloading libcublasLt ("libcublasLt.so.*[0-9] not found").
# So this installs the default wheel WITH its nvidia-*/cuda-toolkit dependencies (~5.7 GB in the venv,
# about 7 minutes here); it runs on the CPU like the +cpu build (same MKL/oneDNN CPU kernels) and the harness
# uses it only on the CPU. Where PyTorch's CPU index is reachable, set TORCH_INDEX_URL to get the small
# +cpu build instead, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

"$python" -c 'import sys; assert sys.version_info >= (3, 9), "Python >= 3.9 needed"'
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/pip" install --progress-bar off)
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "${pip[@]}" --index-url "$TORCH_INDEX_URL" torch
fi
# diffusers ≥ 0.32 has SanaTransformer2DModel, AutoencoderDC and SanaPipeline; transformers ≥ 4.42 Gemma2Model.
"${pip[@]}" torch 'diffusers>=0.32' 'transformers>=4.42' safetensors accelerate
"$venv/bin/python" - <<'EOF'
import torch, diffusers, transformers
from diffusers import AutoencoderDC, SanaPipeline, SanaTransformer2DModel  # noqa: F401
from transformers import Gemma2Model  # noqa: F401
x = torch.randn(64, 64)
assert torch.isfinite(x @ x).all()
print(f"ok: torch {torch.__version__} (CPU threads {torch.get_num_threads()}), diffusers {diffusers.__version__}, transformers {transformers.__version__}")
EOF
