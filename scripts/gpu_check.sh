#!/usr/bin/env bash
# On a machine with a CUDA GPU, in one go: the GPU tests (CPU/CUDA parity of audio and text embeddings,
# each precision mode, one mixed-precision training step), then the full-size audio tower's throughput
# per precision mode at batch 64 of 10 s clips (clips/s, peak GPU memory) and one bf16 training step.
# Usage: bash scripts/gpu_check.sh [--batch 64] [--batches 5]   (from the repository root; ~5 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device')"
$PY -m pytest -q -m gpu tests/test_gpu.py
$PY - "$@" <<'PY'
import argparse, json, time
import torch
from muq_model import MuQMuLan, MuQMuLanConfig
from muq_model.contrastive import contrastive_loss

parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--batches", type=int, default=5)
args = parser.parse_args()
torch.manual_seed(0)
with torch.device("cuda"):
    model = MuQMuLan(MuQMuLanConfig.large(), tokenizer=None).eval()
clips = 0.1 * torch.randn(args.batch, 10 * 24000, generator=torch.Generator().manual_seed(0))
results, reference = {}, None
for mode in ("fp32", "tf32", "bf16"):
    model.set_precision(mode)
    out = model.embed_clips(clips)  # warm-up (cuDNN algorithm choice)
    reference = out if mode == "fp32" else reference
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.batches):
        out = model.embed_clips(clips)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    rate = args.batch * args.batches / seconds
    results[mode] = {"clips_per_s": round(rate, 1), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                     "cosine_min_vs_fp32": torch.nn.functional.cosine_similarity(out, reference).min().item(),
                     "gpu_hours_per_1M_3min_tracks": round(1e6 * 18 / rate / 3600, 1)}
    print(mode, json.dumps(results[mode]), flush=True)
model.train()
optimizer = torch.optim.AdamW([p for p in model.audio.parameters() if p.requires_grad], lr=1e-5)
batch = clips[:8].cuda()
for step in range(3):  # the last of 3 is timed
    torch.cuda.synchronize(); start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        audio = model.encode_audio(batch)
        loss = contrastive_loss(audio, audio.roll(1, 0), audio.roll(1, 0), audio, torch.tensor(10.0, device="cuda"))
    loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
results["bf16_train_step_s_batch8"] = round(time.perf_counter() - start, 3)
results["device"] = torch.cuda.get_device_name(0)
results["batch"] = args.batch
print(json.dumps(results, indent=1))
PY
