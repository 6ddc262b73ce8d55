"""A mixture of training sources (data.train as a list of {path, weight, name}): the rows each epoch draws, and a
run through `python -m llm_tune` with per-source counts, per-source validation losses, the report and doctor."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from conftest import base_recipe, call_cli, write_jsonl, write_recipe


def _shares(rows: list[int], weights: list[float], lengths: list[int] | None = None, by: str = "rows"):
    from llm_tune.data.mixture import epoch_shares

    sources = [i for i, n in enumerate(rows) for _ in range(n)]
    return sources, epoch_shares([f"s{i}" for i in range(len(rows))], weights, lengths or [10] * len(sources),
                                 sources, by)  # fmt: skip


@pytest.mark.fast
def test_weights_are_shares_of_an_epoch_by_rows_and_by_tokens():
    _, shares = _shares([100, 20], [1, 3])  # 120 rows an epoch: a quarter and three quarters
    assert [s.epoch_rows for s in shares] == [30, 90] and shares[1].times == 4.5
    # by tokens: source 0 rows are 30 tokens, source 1 rows 10; equal weights give each half of 3,200 tokens
    sources, shares = _shares([100, 20], [1, 1], lengths=[30] * 100 + [10] * 20, by="tokens")
    assert [s.tokens for s in shares] == [3000, 200]
    assert [s.epoch_rows for s in shares] == [53, 160]  # 1,600 / 30 and 1,600 / 10 tokens
    assert "source s1: 20 rows, 200 tokens, weight 1 (by tokens) -> 160 rows an epoch (8.00x its rows)" in [
        s.line("tokens") for s in shares
    ]


@pytest.mark.fast
def test_each_epoch_draws_its_share_afresh_and_a_resume_draws_the_same():
    from llm_tune.data.mixture import epoch_rows

    sources, shares = _shares([100, 20], [1, 3])
    epochs = [epoch_rows(sources, shares, seed=7, epoch=e) for e in range(3)]
    for drawn in epochs:
        by_source = Counter(sources[i] for i in drawn)
        assert by_source == {0: 30, 1: 90}
        down = [i for i in drawn if sources[i] == 0]
        assert len(set(down)) == 30  # a downsampled source: no row twice in an epoch
        up = Counter(i for i in drawn if sources[i] == 1)
        assert sorted(Counter(up.values()).items()) == [(4, 10), (5, 10)]  # 4 whole passes, then 10 rows drawn
    assert {tuple(sorted(i for i in e if sources[i] == 0)) for e in epochs}.__len__() == 3  # fresh each epoch
    assert epoch_rows(sources, shares, seed=7, epoch=1) == epochs[1]  # a pure function of (seed, epoch)
    assert epoch_rows(sources, shares, seed=8, epoch=1) != epochs[1]


@pytest.mark.fast
def test_the_sampler_orders_the_drawn_rows_by_length_in_global_batches():
    from llm_tune.train.order import MixedOrder

    sources, shares = _shares([40, 8], [1, 1])
    lengths = [5 + i % 17 for i in range(48)]
    sampler = MixedOrder(sources, shares, lengths, global_batch=8, seed=3)
    sampler.set_epoch(2)
    order = list(sampler)
    assert len(order) == len(sampler) == 48 and Counter(sources[i] for i in order) == {0: 24, 1: 24}
    assert order == list(sampler)  # the same epoch again: the same order
    sampler.set_epoch(3)
    assert list(sampler) != order


def _rows(kind: str, n: int, offset: int = 0) -> list[dict]:
    if kind == "add":
        return [{"instruction": f"Add {a} and {a + 7}.", "output": str(2 * a + 7)} for a in range(offset, offset + n)]
    return [{"instruction": f"Spell the word number {a} backwards: {'abcdefgh'[a % 8:]}", "output": "abcdefgh"[a % 8:][::-1]}
            for a in range(offset, offset + n)]  # fmt: skip


def test_a_mixed_run_counts_each_source_and_reports_each_validation_loss(tmp_path, tiny_model):
    """Two sources weighted 1:3 by rows (20 and 8 rows: 7 and 21 an epoch), two validation sources: the run says
    what each source gives an epoch, trains that many steps, logs eval_NAME_loss at every evaluation, and its
    eval_loss is the rows' mean of the sources' losses; the report plots them; doctor counts each source."""
    data = tmp_path / "data"
    add, spell = write_jsonl(data / "add.jsonl", _rows("add", 20)), write_jsonl(data / "spell.jsonl", _rows("spell", 8))
    add_val = write_jsonl(data / "add_val.jsonl", _rows("add", 4, 100))
    spell_val = write_jsonl(data / "spell_val.jsonl", _rows("spell", 6, 100))
    out = tmp_path / "run"
    recipe = base_recipe(tiny_model, data, out)
    recipe["data"].update(train=[{"path": str(add), "weight": 1}, {"path": str(spell), "weight": 3}],
                          validation=[{"path": str(add_val), "name": "add"}, {"path": str(spell_val), "name": "backwards"}])  # fmt: skip
    recipe["training"].update(max_steps=-1, num_train_epochs=2, per_device_train_batch_size=4, eval_steps=4)
    path = write_recipe(tmp_path / "mix.yaml", recipe)

    done = call_cli(path)
    assert "source add: 20 rows" in done.stdout and "-> 7 rows an epoch (35.0% of its rows)" in done.stdout
    assert "source spell: 8 rows" in done.stdout and "-> 21 rows an epoch (2.62x its rows)" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(m["name"], m["rows"], m["epoch_rows"]) for m in metrics["mixture"]] == [("add", 20, 7), ("spell", 8, 21)]
    assert metrics["train_steps"] == 2 * math.ceil(28 / 4) and metrics["train_examples"] == 2 * (7 + 21)
    a, b = metrics["eval_add_loss"], metrics["eval_backwards_loss"]
    assert a != b and metrics["eval_loss"] == pytest.approx((4 * a + 6 * b) / 10, rel=1e-6)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    evaluations = [e for e in history if "eval_add_loss" in e]
    # the trainer's own evaluations, then the pipeline's end-of-run one (at the last step too)
    assert sorted({e["step"] for e in evaluations}) == [4, 8, 12, 14] and all(
        "eval_backwards_loss" in e for e in evaluations
    )
    assert "Validation loss by source" in (out / "report.html").read_text()

    doctor = call_cli("doctor", path, "--json", tmp_path / "doctor.json")
    assert "sources (data.train" in doctor.stdout
    found = json.loads((tmp_path / "doctor.json").read_text())["sources"]
    assert [(s["split"], s["name"], s["rows"], s["epoch_rows"]) for s in found] == [
        ("train", "add", 20, 7), ("train", "spell", 8, 21), ("validation", "add", 4, None),
        ("validation", "backwards", 6, None),
    ]  # fmt: skip
    assert all(s["tokens"] > s["rows"] for s in found)


def test_a_mixture_carves_validation_that_keeps_its_sources(tmp_path, tiny_model):
    """data.validation_fraction over a mixture: the carved rows keep their source, so each source has a loss."""
    data = tmp_path / "data"
    add, spell = (
        write_jsonl(data / "add.jsonl", _rows("add", 20)),
        write_jsonl(data / "spell.jsonl", _rows("spell", 12)),
    )
    out = tmp_path / "run"
    recipe = base_recipe(tiny_model, data, out)
    recipe["data"].update(train=[{"path": str(add)}, {"path": str(spell)}], validation_fraction=0.25)
    path = write_recipe(tmp_path / "mix.yaml", recipe)
    call_cli(path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"eval_add_loss", "eval_spell_loss", "eval_loss"} <= set(metrics)
    assert sum(m["rows"] for m in metrics["mixture"]) == 24  # 32 rows less the carved quarter


@pytest.mark.fast
def test_examples_count_the_rows_an_epoch_draws_not_the_rows_loaded():
    """A mixture by tokens draws 40 rows an epoch from 28 loaded: 2 epochs and 3 steps of 8 train 2 x 40 + 24 rows
    (once reported as epochs x 28); a stream counts steps x the global batch."""
    from types import SimpleNamespace

    from llm_tune.data.mixture import SourceShare
    from llm_tune.pipeline import _examples

    args = SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=1)
    shares = [SourceShare("a", 1.0, 20, 200, 10), SourceShare("b", 3.0, 8, 40, 30)]
    per_epoch = math.ceil(40 / 8)
    trainer = SimpleNamespace(args=args, state=SimpleNamespace(global_step=2 * per_epoch + 3), mixture=shares,
                              train_dataset=list(range(28)))  # fmt: skip
    assert _examples(trainer) == 2 * 40 + 3 * 8
    trainer.state.global_step = 2 * per_epoch
    assert _examples(trainer) == 80
    stream = SimpleNamespace(args=args, state=SimpleNamespace(global_step=5), mixture=None, train_dataset=iter([]))
    assert _examples(stream) == 40
