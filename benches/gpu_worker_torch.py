"""GPU measurements of diffusers' SanaPipeline (issue 7), mirroring benches/gpu-worker-ours.mjs: the pipeline
loads once, then per batch size the DiT forward of one CFG step and the whole pipeline call.

Usage: python benches/gpu_worker_torch.py '<spec JSON>'  → last stdout line: the result JSON.
"""
import json
import sys
import time

import torch

spec = json.loads(sys.argv[1])
dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[spec["dtype"]]
dev = spec["device"].split(":")[0]
# CUDA runs asynchronously: every timed region ends by waiting for the GPU (a no-op on the CPU, for smoke tests).
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
started = time.perf_counter()


def progress(**o):
    sys.stderr.write("progress " + json.dumps(o) + "\n")
    sys.stderr.flush()


def time_it(label, fn, warmup, runs, budgetS):
    for i in range(warmup):
        progress(phase="warmup", what=label, i=i, n=warmup)
        fn(True)
    times = []
    while len(times) < runs and (not times or sum(times) < budgetS):
        progress(phase="run", what=label, i=len(times), n=runs)
        t = time.perf_counter()
        fn(False)
        sync()
        times.append(time.perf_counter() - t)
    return times


from diffusers import SanaPipeline  # noqa: E402  (after the spec parse: a bad spec fails fast)

t0 = time.perf_counter()
pipe = SanaPipeline.from_pretrained(spec["dir"], torch_dtype=dtype).to(dev)
pipe.set_progress_bar_config(disable=True)
sync()
load_s = time.perf_counter() - t0
progress(phase="loaded", loadS=load_s)
tr = pipe.transformer
h = w = spec["size"] // 32
result = {"impl": "pytorch", "device": dev, "dtype": spec["dtype"], "loadS": load_s, "dit": [], "e2e": [], "skipped": []}
result["versions"] = {"torch": torch.__version__, **{k: sys.modules[k].__version__ for k in ("diffusers", "transformers") if k in sys.modules}}
if dev == "cuda":
    result["gpu"] = torch.cuda.get_device_name()

with torch.inference_mode():
    for b in spec["batches"]:
        if time.perf_counter() - started > spec["deadlineS"]:
            result["skipped"].append(f"batch {b}: over the {spec['deadlineS']} s deadline")
            continue
        n = 2 * b
        x = torch.randn(n, 32, h, w, device=dev, dtype=dtype)
        e = torch.randn(n, 300, tr.config.caption_channels, device=dev, dtype=dtype)
        t = torch.full((n,), 999.0, device=dev)
        out = {}

        def dit(_warm):
            out["y"] = tr(hidden_states=x, encoder_hidden_states=e, timestep=t, return_dict=False)[0]
            sync()

        dit_s = time_it(f"DiT b{b}", dit, **spec["dit"])
        result["dit"].append({"batch": b, "timesS": dit_s, "finite": bool(torch.isfinite(out["y"]).all())})

        marks = []

        def on_step(_pipe, _i, _t, kwargs):
            sync()
            marks.append(time.perf_counter())
            return kwargs

        def e2e(warm):
            marks.clear()
            marks.append(time.perf_counter())
            pipe(
                prompt=["a red fox in the snow, golden hour, highly detailed"] * b,
                num_inference_steps=2 if warm else spec["steps"], guidance_scale=4.5,
                height=spec["size"], width=spec["size"], generator=torch.Generator(dev).manual_seed(42),
                use_resolution_binning=False, callback_on_step_end=on_step,
            )

        e2e_s = time_it(f"pipeline b{b}", e2e, **spec["e2e"])
        # Step intervals after the first (the first includes prompt encoding).
        result["e2e"].append({"batch": b, "timesS": e2e_s, "stepS": [y - x for x, y in zip(marks[1:], marks[2:])]})
        if dev == "cuda":
            result["peakGpuMemGiB"] = torch.cuda.max_memory_allocated() / 2**30
        # After every batch: a worker stopped at its time limit keeps its rows.
        print(json.dumps(result), flush=True)
print(json.dumps(result))
