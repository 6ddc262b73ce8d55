"""Cut the demo-size copies of public datasets in data/ from the full files in ../shared/data, so every shipped
recipe runs from a clone that has no ../shared beside it.

    python data/cut.py                        # reads ../shared/data (beside the repository), writes data/
    python data/cut.py --source DIR --out DIR

Standard library only, and reproducible: each source file's sha256 is checked against ../shared/data/STATS.json
first, so the same inputs and seed give the same bytes. Each output file takes `rows` lines of its source, chosen by
`random.Random(SEED)` (a fresh generator per file), copied byte for byte and kept in the source's order. GoEmotions
adds one rule: before filling up at random, its rarest labels are topped up to a floor (see `pick`), so every one of
the 28 labels is in the training cut and the validation cut has positives for every label's threshold.
Provenance, licences and row counts: data/README.md."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 0

# (folder, split, rows, label floor or None): the folder names are ../shared/data's, so a mixture's source names
# (and its eval_NAME_loss) are the same on the cut as on the full file.
CUTS = [
    ("hh_rlhf_helpful_pairs", "train", 400, None),  # recipes/dpo.yaml: 64 steps of 4 pairs use 256
    ("hh_rlhf_helpful_pairs", "validation", 200, None),  # all of it: the pairs dpo.yaml's figures were measured on
    ("goemotions", "train", 3000, 10),  # recipes/multilabel.yaml: 480 steps of 16, 2.56 epochs
    ("goemotions", "validation", 500, 3),
    ("stsb", "train", 2000, None),  # recipes/regression.yaml: 560 steps of 8, 2.24 epochs
    ("stsb", "validation", 200, None),
    ("code_alpaca_2k", "train", 400, None),  # recipes/mix.yaml, weight 3
    ("gsm8k", "train", 400, None),  # recipes/mix.yaml, weight 1
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pick(lines: list[str], rows: int, floor: int | None) -> list[int]:
    """The indices of `rows` lines, in source order. A seeded shuffle of every index; with a label floor, each label
    in turn (rarest in the source first) takes the next lines of the shuffled order that carry it until the cut
    holds `floor` rows of it; then the shuffled order fills the cut up to `rows`."""
    order = list(range(len(lines)))
    random.Random(SEED).shuffle(order)
    chosen: list[int] = []
    taken: set[int] = set()
    if floor is not None:
        labels = [json.loads(line)["labels"] for line in lines]
        in_source = Counter(label for found in labels for label in found)
        in_cut: Counter[str] = Counter()
        for label in sorted(in_source, key=lambda name: (in_source[name], name)):
            for i in order:
                if in_cut[label] >= floor:
                    break
                if label in labels[i] and i not in taken:
                    chosen.append(i)
                    taken.add(i)
                    in_cut.update(labels[i])
    for i in order:
        if len(chosen) >= rows:
            break
        if i not in taken:
            chosen.append(i)
            taken.add(i)
    return sorted(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "data")
    args = parser.parse_args()
    stats = json.loads((args.source / "STATS.json").read_text(encoding="utf-8"))
    for folder, split, rows, floor in CUTS:
        source = args.source / folder / f"{split}.jsonl"
        expected = stats[folder]["files"][split]["sha256"]
        if sha256(source) != expected:
            raise SystemExit(f"{source}: sha256 differs from STATS.json's {expected}; not the documented file")
        text = source.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            raise SystemExit(f"{source}: does not end with a newline")
        lines = [line + "\n" for line in text.split("\n")[:-1]]  # JSON Lines ends lines with \n only
        chosen = pick(lines, rows, floor)
        out = args.out / folder / f"{split}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(lines[i] for i in chosen), encoding="utf-8")
        name = out.relative_to(args.out.parent)
        print(f"{name}: {len(chosen):,} of {len(lines):,} rows, {out.stat().st_size:,} bytes, sha256 {sha256(out)}")


if __name__ == "__main__":
    main()
