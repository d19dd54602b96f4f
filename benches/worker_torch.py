"""One measurement of PyTorch (diffusers / transformers, CPU, float32) on the same random-weight folder as ours.

Usage: benches/.venv/bin/python benches/worker_torch.py '<row JSON with dir>'  → last stdout line: the result JSON.
Progress goes to stderr as `progress <JSON>` lines (as worker-ours.mjs). Threads: torch.set_num_threads(SANA_BENCH_THREADS).
"""
import json
import os
import resource
import sys
import time

import torch

spec = json.loads(sys.argv[1])
threads = int(os.environ.get("SANA_BENCH_THREADS", "2"))
torch.set_num_threads(threads)
torch.manual_seed(0)


def progress(**o):
    sys.stderr.write("progress " + json.dumps(o) + "\n")
    sys.stderr.flush()


def check_loading_info(info, what):
    """Every tensor must come from our file: a missing key would silently be randomly initialised."""
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise SystemExit(f"{what}: checkpoint does not match the PyTorch model: {json.dumps(bad)[:2000]}")


def load(cls, d, **dtype):
    """`cls.from_pretrained(d)` in float32, checked key by key against the file, in eval mode."""
    m, info = cls.from_pretrained(d, output_loading_info=True, **dtype)
    check_loading_info(info, d)
    return m.eval()


def token_ids(length, vocab):
    # As worker-ours.mjs and bench_gemma.rs: ids spread over the vocabulary, <bos> first.
    return [2 if t == 0 else (t * 7919) % vocab for t in range(length)]


# PyTorch stays float32 (the anchor) unless a row asks for `torchDtype` (e.g. bfloat16 once, for the record).
DTYPE = getattr(torch, spec.get("torchDtype", "float32"))


def setup():
    kind, d, b = spec["kind"], spec["dir"], spec["batch"]
    if kind == "transformer":
        from diffusers import SanaTransformer2DModel

        m = load(SanaTransformer2DModel, d, torch_dtype=DTYPE)
        h, w = spec["latent"]
        x = torch.randn(b, 32, h, w).to(DTYPE)
        e = torch.randn(b, spec["seqLen"], m.config.caption_channels).to(DTYPE)
        t = torch.full((b,), 999.0).to(DTYPE)
        return lambda: m(hidden_states=x, encoder_hidden_states=e, timestep=t, return_dict=False)[0], m
    if kind == "vae":
        from diffusers import AutoencoderDC

        m = load(AutoencoderDC, d, torch_dtype=DTYPE)
        h, w = spec["latent"]
        z = torch.randn(b, 32, h, w).to(DTYPE)
        return lambda: m.decode(z, return_dict=False)[0], m  # no tiling (diffusers' default)
    if kind == "text_encoder":
        from transformers import Gemma2Model

        m = load(Gemma2Model, d, dtype=DTYPE)  # transformers ≥ 5 names it dtype
        ids = torch.tensor([token_ids(spec["seqLen"], m.config.vocab_size)] * b)
        mask = torch.ones_like(ids)
        return lambda: m(input_ids=ids, attention_mask=mask).last_hidden_state, m
    if kind == "pipeline":
        from diffusers import SanaPipeline

        pipe = SanaPipeline.from_pretrained(d, torch_dtype=DTYPE)
        pipe.set_progress_bar_config(disable=True)
        height, width = spec["size"]
        steps = []

        def on_step(_pipe, _i, _t, kwargs):
            steps.append(time.perf_counter())
            return kwargs

        def run():
            steps.clear()
            start = time.perf_counter()
            images = pipe(
                prompt=["a red fox in the snow, golden hour, highly detailed"] * b,
                num_inference_steps=spec["steps"], guidance_scale=4.5, height=height, width=width,
                generator=torch.Generator().manual_seed(42), use_resolution_binning=False,
                callback_on_step_end=on_step,
            ).images
            # The first step's time includes prompt encoding, as ours' stepTimesMs does not: report both
            # as step boundaries and let the caller subtract.
            return images, [start] + list(steps)

        return run, pipe.transformer
    raise SystemExit(f"unknown kind {kind}")


t0 = time.perf_counter()
run, model = setup()
load_s = time.perf_counter() - t0
progress(phase="loaded", loadS=load_s)
times, step_s, last = [], [], None
with torch.inference_mode():
    for i in range(spec["warmup"] + spec["runs"]):
        warm = i < spec["warmup"]
        progress(phase="warmup" if warm else "run", i=i if warm else i - spec["warmup"], n=spec["warmup"] if warm else spec["runs"])
        t = time.perf_counter()
        out = run()
        s = time.perf_counter() - t
        if isinstance(out, tuple):
            out, marks = out
            if not warm:
                step_s.append([b - a for a, b in zip(marks, marks[1:])])
        last = out
        if not warm:
            times.append(s)
        progress(phase="warmup-done" if warm else "run-done", s=s)
        if not warm and sum(times) >= spec["budgetS"]:
            break

if isinstance(last, torch.Tensor):
    shape, finite = list(last.shape), bool(torch.isfinite(last).all())
else:
    shape, finite = [len(last)], True
print(json.dumps({
    "impl": "pytorch", "loadS": load_s, "timesS": times, "stepS": step_s, "outShape": shape, "finite": finite,
    "peakRssMb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads(),
    "versions": {"torch": torch.__version__, **{k: sys.modules[k].__version__ for k in ("diffusers", "transformers") if k in sys.modules}},
    "attn": getattr(getattr(model, "config", None), "_attn_implementation", None),
}))
