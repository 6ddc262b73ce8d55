#!/usr/bin/env bash
# What bench/gpu_check.sh carries to the offline GPU machine, made here (both folders git-ignored):
#   .whl/            the wheels it installs
#   .device_bundle/  SmolLM2's tokenizer (the random models' vocabulary and chat template; 3.5 MB, not the
#                    540 MB weights) and the rows it trains on (Code Alpaca, SST-2's seed-0 4,000-row sample
#                    as bench/sst2.py draws it, and SST-2's validation split)
# Then run on the device: bash bench/gpu_check.sh   (carry .whl and .device_bundle)
#
# The wheels bench/gpu_check.sh installs on the offline GPU machine (Python 3.12, torch 2.11+cu130, transformers
# 5.17, accelerate 1.15, ...): llm_tune's floors and what `import llm_tune` and its commands need there, into .whl/
# (git-ignored). Same download as /work/shared/device/wheels.sh, with our list; then bitsandbytes keeps only its
# CUDA 13 and CPU libraries (129 MB of per-CUDA builds unpacked, 43 MB packed, over the 64 MiB transfer limit).
# Every Requires-Dist of these was checked against the image's package list (bench/gpu_check.sh prints versions).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
rm -rf .whl && mkdir -p .whl
wheels=(
  transformers==5.25.0 accelerate==1.16.0 peft==0.21.2 trl==1.16.0 datasets==5.2.0 bitsandbytes==0.50.2
  gguf==0.19.0 dill==0.4.0 multiprocess==0.70.18 fsspec==2026.9.0 regex==2026.11.19
  huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 kernels==0.19.1 tomlkit==0.15.3
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d .whl "${wheels[@]}"
python3 - <<'EOF'
import glob, re, zipfile, os
src = glob.glob(".whl/bitsandbytes-*.whl")[0]
drop = re.compile(r"bitsandbytes/libbitsandbytes_(cuda1[12]\d|rocm\d+)\.so$")
tmp = src + ".slim"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if drop.search(item.filename):
            continue
        data = zin.read(item)
        if item.filename.endswith(".dist-info/RECORD"):  # pip reads RECORD: list only what is kept
            data = b"".join(line for line in data.splitlines(keepends=True) if not drop.search(line.split(b",")[0].decode()))
        zout.writestr(item, data)
os.replace(tmp, src)
EOF
rm -rf .device_bundle && mkdir -p .device_bundle/tokenizer .device_bundle/data/code_alpaca_2k .device_bundle/data/sst2
cp models/SmolLM2-135M-Instruct/{tokenizer.json,tokenizer_config.json,chat_template.jinja,config.json} .device_bundle/tokenizer/
head -n 1600 /work/shared/data/code_alpaca_2k/train.jsonl > .device_bundle/data/code_alpaca_2k/train.jsonl
PYTHONPATH=bench python3 -c "
from pathlib import Path; from sst2 import sample
src, dst = Path('/work/shared/data/sst2'), Path('.device_bundle/data/sst2')
sample(src / 'train.jsonl', dst / 'train.jsonl', 4000, 0); sample(src / 'validation.jsonl', dst / 'validation.jsonl', None, 0)"
du -sh .whl .device_bundle
du -sbc --exclude=.git --exclude=models --exclude=runs --exclude=.venv . | tail -1 | awk '{printf "what travels (tree + .whl + .device_bundle): %.1f MiB of 64\n", $1 / 1048576}'
