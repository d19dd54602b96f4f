"""Random weights for the GPU benchmark's pipeline folder, written as the released checkpoints are: bfloat16
safetensors saved by diffusers / transformers from each component's config.json (PyTorch's default
initialisation, on the GPU, seeded). Ours and diffusers then load the very same files.

Usage: python benches/gpu_weights.py PIPELINE_DIR   (PIPELINE_DIR/{transformer,vae,text_encoder}/config.json)
"""
import json
import os
import sys
import time

import torch
from diffusers import AutoencoderDC, SanaTransformer2DModel
from transformers import Gemma2Config, Gemma2Model

root = sys.argv[1]
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)


def config(part):
    with open(os.path.join(root, part, "config.json")) as f:
        return json.load(f)


def save(part, build):
    t = time.perf_counter()
    with torch.device(dev):
        model = build().to(torch.bfloat16)
    model.save_pretrained(os.path.join(root, part))
    n = sum(p.numel() for p in model.parameters())
    print(f"{part}: {n / 1e6:.0f} M parameters, bf16, {time.perf_counter() - t:.1f} s", flush=True)
    del model
    torch.cuda.empty_cache()


save("transformer", lambda: SanaTransformer2DModel.from_config(config("transformer")))
save("vae", lambda: AutoencoderDC.from_config(config("vae")))
save("text_encoder", lambda: Gemma2Model(Gemma2Config.from_pretrained(os.path.join(root, "text_encoder"))))
