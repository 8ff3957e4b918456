#!/usr/bin/env bash
# The one prepared GPU check (issue 11): bench/gpu_train.py, then the smoke pipeline with eval over
# the GPU, on a device machine with no network (see /work/.library/device/README.md for the tool).
#
# Prepared, NOT run yet: no device has been lent to this project's sessions so far.
#
# What travels: the working tree (64 MiB limit) plus wheels the image lacks. The image has torch,
# accelerate, peft, safetensors, tokenizers, sentence-transformers, scikit-learn, pyarrow, jinja2,
# matplotlib and pyyaml, but transformers 5.17 (we need >= 5.21) and no datasets, gguf or
# chitchat-dataset. Here, once, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl transformers==5.24.0 datasets dill multiprocess chitchat-dataset
# then run with carry [".whl"]:  bash bench/device_check.sh
# The packaged Gemma-3-270M GGUF (~250 MB) is over the carry limit, so the real fine-tune
# (configs/train/gemma-270m-gpu.yaml + configs/eval/full.yaml) cannot run there offline; this
# check uses gpu_train.py's random-initialised ~1B Llama and the tiny smoke model instead.
set -euo pipefail
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. conversation-level vs per-turn LoRA training, tokens/s and MFU (about 5 minutes)
timeout 400 python3 bench/gpu_train.py 2>&1 | tee "$OUT/gpu_train.log"
cp bench/results/gpu_train*.json "$OUT/" 2>/dev/null || true

# 2. the smoke pipeline on the GPU: data -> tiny train -> eval (generation + perplexity on cuda)
R=/tmp/runs/smoke
python3 -m usersim.data_prep.main --config configs/data/smoke.yaml --output_dir $R/data
python3 -m usersim.train.main --config configs/train/smoke.yaml --output_dir $R/train data_dir=$R/data
timeout 300 python3 -m usersim.eval.main --config configs/eval/smoke.yaml --output_dir $R/eval data_dir=$R/data \
  run_dir=$R/train show_progress=false 2>&1 | tee "$OUT/eval_smoke.log"
python3 - "$R/eval/metrics.json" <<'PY' | tee "$OUT/eval_timings.txt"
import json, sys
doc = json.load(open(sys.argv[1]))
t = doc["timings_s"]
print("eval items", doc["n_items"], "timings", t, "items/s (simulate)", round(doc["n_items"] / max(t["simulate"], 1e-9), 1))
PY
