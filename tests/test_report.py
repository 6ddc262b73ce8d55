"""The run report through the real entry point: every training run writes a self-contained report.html with its
plots; `report` rebuilds it from the run folder alone and overlays several runs; a folder that is no run is one
error line. One SFT and one classification run of the tiny model serve the whole module."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import base_recipe, run_cli, run_cli_together, write_jsonl, write_recipe

PNG = b"\x89PNG\r\n\x1a\n"
TRICKY = 'Explain <b>bold</b> & "quotes".'  # a validation prompt the page must escape, not interpret


@pytest.fixture(scope="module")
def runs(tiny_model, data_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    validation = write_jsonl(
        root / "val.jsonl",
        [{"instruction": TRICKY, "output": "Like this."}, {"instruction": "Add 1 and 2.", "output": "3"}],
    )
    sft = base_recipe(tiny_model, data_dir, root / "sft", training={"max_steps": 4, "eval_steps": 2})
    sft["data"]["validation"] = str(validation)
    cls = base_recipe(
        tiny_model,
        data_dir,
        root / "cls",
        task="classification",
        classification={"head": "sequence"},
        data={
            "train": str(data_dir / "reviews.jsonl"),
            "validation": str(data_dir / "reviews_val.jsonl"),
            "format": "classification",
        },
    )
    done = run_cli_together([write_recipe(root / "sft.yaml", sft)], [write_recipe(root / "cls.yaml", cls)])
    for name, trained in zip(("sft", "cls"), done):
        assert f"report written to {root / name / 'report.html'}" in trained.stdout
    return {"sft": root / "sft", "cls": root / "cls", "root": root}


def _self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I), "the page refers outside itself"
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert "url(" not in html  # no CSS resources either


def _embedded(html: str) -> list[bytes]:
    import base64

    return [base64.b64decode(uri) for uri in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_an_sft_run_writes_a_self_contained_report(runs):
    run = runs["sft"]
    html = (run / "report.html").read_text(encoding="utf-8")
    _self_contained(html)
    plots = {p.name: p.read_bytes() for p in (run / "report").iterdir()}
    assert set(plots) == {"loss.png", "learning_rate.png"} and all(b.startswith(PNG) for b in plots.values())
    assert sorted(_embedded(html)) == sorted(plots.values())  # the page carries the very PNGs it saved
    # The resolved recipe, the metrics, the environment, and the samples made at the end of training.
    assert "Resolved recipe" in html and "strategy:" in html and "train_loss" in html
    environment = json.loads((run / "environment.json").read_text())
    libraries = {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "llm_tune"}
    assert libraries <= set(environment["versions"])
    assert environment["versions"]["transformers"] in html and environment["device"] in html
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == [TRICKY, "Add 1 and 2."] and samples[1]["reference"] == "3"
    assert "Explain &lt;b&gt;bold&lt;/b&gt; &amp; &#34;quotes&#34;." in html and "<b>bold" not in html
    # Validation loss from the trainer's log (eval_steps: 2) next to the training loss.
    log = json.loads((run / "trainer_state.json").read_text())["log_history"]
    assert sum("eval_loss" in e for e in log) >= 2


def test_a_classification_run_adds_the_confusion_matrix_and_per_class_f1(runs):
    run = runs["cls"]
    html = (run / "report.html").read_text(encoding="utf-8")
    _self_contained(html)
    names = {p.name for p in (run / "report").iterdir()}
    assert names == {"loss.png", "learning_rate.png", "confusion_matrix.png", "per_class_f1.png"}
    assert len(_embedded(html)) == 4
    predictions = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert "Sample predictions" in html and predictions[0]["text"] in html
    assert "negative" in html and "positive" in html and "Confusion matrix" in html


def test_report_rebuilds_from_the_run_folder(runs):
    run = runs["cls"]
    before = (run / "report.html").read_text(encoding="utf-8")
    (run / "report.html").unlink()
    shutil.rmtree(run / "report")
    done = run_cli("report", run)
    assert done.stdout.strip() == f"[llm_tune] report written to {run / 'report.html'}"
    after = (run / "report.html").read_text(encoding="utf-8")
    strip_date = re.compile(r"on \d{4}-\d\d-\d\d \d\d:\d\d")
    assert strip_date.sub("", after) == strip_date.sub("", before)
    assert len(list((run / "report").iterdir())) == 4


def test_report_overlays_several_runs(runs):
    out = runs["root"] / "compare.html"
    run_cli("report", runs["sft"], runs["cls"], "--out", out)
    html = out.read_text(encoding="utf-8")
    _self_contained(html)
    assert len(_embedded(html)) == 2  # loss and learning rate, both runs' curves in each
    assert ">sft<" in html and ">cls<" in html
    assert "Recipe differences" in html and ">task<" in html and "eval_accuracy" in html


def test_a_folder_that_is_no_run_is_one_error_line(runs, tmp_path):
    done = run_cli("report", tmp_path, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path}: not a run folder (no recipe.resolved.yaml); give the output_dir of a training run"
    ]
    done = run_cli("report", runs["sft"], "--out", tmp_path / "page.txt", check=False)
    assert done.returncode == 2 and done.stderr.startswith("error: --out:") and len(done.stderr.splitlines()) == 1
