"""data.streaming: a file read as the run trains. The stream tokenizes each row as a loaded file would, in an order
seeded by (seed, pass); bad rows are named or counted; a run through the CLI trains max_steps over several passes
and says what it read. (Killing a streamed run in its third pass and resuming it: tests/test_resume.py.)"""

from __future__ import annotations

import copy
import itertools
import json
import random

import pytest

from conftest import SMOLLM2, base_recipe, call_cli, write_jsonl, write_recipe

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SMOLLM2))


def _config(path, fmt: str = "alpaca", **changes):
    from llm_tune.recipe.data import DataConfig

    return DataConfig(train=str(path), format=fmt, streaming=True, max_length=64, **changes)


def _loaded(cfg, tokenizer) -> list[tuple]:
    """The rows as the loaded path trains on them (data/formats.py, then data/tokens.py)."""
    from llm_tune.data.formats import load_splits
    from llm_tune.data.tokens import tokenize_sft

    splits = load_splits(cfg.model_copy(update={"streaming": False}), None, tokenizer)
    done = tokenize_sft(splits.train, tokenizer, completion_only=True, assistant_only=cfg.format == "chat",
                        max_length=cfg.max_length, packing=False)  # fmt: skip
    return [(tuple(r["input_ids"]), tuple(r["labels"])) for r in done.dataset]


def _streamed(cfg, tokenizer, rows: int, seed: int = 0, grouped: bool = False) -> list[tuple]:
    from llm_tune.data.stream import streamed_train

    stream = streamed_train(cfg, tokenizer, seed, global_batch=2, grouped=grouped)
    return [(tuple(r["input_ids"]), tuple(r["labels"])) for r in itertools.islice(stream, rows)]


@pytest.mark.parametrize(
    ("file", "fmt"), [("alpaca.jsonl", "alpaca"), ("chat.jsonl", "chat"), ("text.jsonl", "completion")]
)
def test_a_pass_of_the_stream_is_the_loaded_file_tokenized_the_same_way(data_dir, tokenizer, file, fmt):
    cfg = _config(data_dir / file, fmt)
    if fmt == "chat":  # the template with {% generation %} markers that pipeline.training_tokenizer sets
        from llm_tune.data.chat_templates import training_chat_template

        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.chat_template = training_chat_template(tokenizer, None)
    loaded = _loaded(cfg, tokenizer)
    assert loaded
    first_pass = _streamed(cfg, tokenizer, len(loaded))
    assert sorted(first_pass) == sorted(loaded)  # every row once, token for token
    assert first_pass != loaded  # shuffled


def test_the_order_is_a_function_of_the_seed_and_the_pass(data_dir, tokenizer):
    cfg = _config(data_dir / "alpaca.jsonl", shuffle_buffer=8)
    two_passes = _streamed(cfg, tokenizer, 40, seed=3)
    assert two_passes == _streamed(cfg, tokenizer, 40, seed=3)  # what a resumed run reads again
    assert two_passes != _streamed(cfg, tokenizer, 40, seed=4)
    assert two_passes[:20] != two_passes[20:] and sorted(two_passes[:20]) == sorted(two_passes[20:])


def test_buffer_shuffling_and_length_windows():
    from llm_tune.data.stream import _grouped, _shuffled

    drawn = list(_shuffled(range(100), 10, random.Random(1)))
    assert sorted(drawn) == list(range(100)) and drawn != list(range(100))
    assert max(drawn[:10]) < 20  # a buffer of 10 moves a row at most ~10 places ahead
    rows = [{"input_ids": [0] * n} for n in [3, 9, 1, 7, 5, 2, 8]]
    lengths = [len(r["input_ids"]) for r in _grouped(rows, 3)]
    assert lengths == [9, 3, 1, 7, 5, 2, 8]  # each window of 3 longest first, the last one short


def test_bad_rows_past_the_first_rows_are_named_or_counted(tmp_path, tokenizer):
    from llm_tune.data.stream import HEAD_ROWS, load_stream_splits, streamed_train
    from llm_tune.errors import UserError

    rows = [{"instruction": f"Say {i}.", "output": str(i)} for i in range(HEAD_ROWS + 50)]
    rows[HEAD_ROWS + 9]["output"] = ""  # line HEAD_ROWS + 10, after the rows checked up front
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    cfg = _config(path, shuffle_buffer=4)
    assert load_stream_splits(cfg, tokenizer).notes == []  # the first rows are fine
    with pytest.raises(UserError, match=rf"rows.jsonl:{HEAD_ROWS + 10}: missing or empty 'output'"):
        list(itertools.islice(streamed_train(cfg, tokenizer, 0, 2, grouped=True), len(rows)))
    skipping = streamed_train(cfg.model_copy(update={"skip_bad_rows": True}), tokenizer, 0, 2, grouped=True)
    assert len(list(itertools.islice(skipping, 2 * len(rows) - 2))) == 2 * len(rows) - 2  # two passes, one bad row each
    assert skipping.counts.bad_rows_skipped == 2 and skipping.counts.passes == 2


def test_bad_rows_among_the_first_rows_are_counted_before_the_run(tmp_path, tokenizer):
    from llm_tune.data.stream import load_stream_splits

    rows = [{"instruction": f"Say {i}.", "output": str(i) if i != 3 else ""} for i in range(6)]
    cfg = _config(write_jsonl(tmp_path / "rows.jsonl", rows), skip_bad_rows=True)
    splits = load_stream_splits(cfg, tokenizer)
    assert len(splits.train) == 5 and splits.notes[-1].endswith(
        "skipped 1 bad rows of the first 6 (data.skip_bad_rows)"
    )
    assert any("rows.jsonl:4: missing or empty 'output'" in note for note in splits.notes)


def test_truncated_rows_and_rows_left_without_a_trained_token_are_counted(tmp_path, tokenizer):
    from llm_tune.data.stream import streamed_train

    rows = [{"instruction": "Say yes.", "output": "yes " * 80}, {"instruction": "Say no. " * 80, "output": "no"}]
    rows += [{"instruction": f"Say {i}.", "output": str(i)} for i in range(4)]
    stream = streamed_train(_config(write_jsonl(tmp_path / "rows.jsonl", rows)), tokenizer, 0, 2, grouped=False)
    trained = list(itertools.islice(stream, 5))  # one pass: the long prompt's row is left out
    assert all(len(r["input_ids"]) <= 64 for r in trained)
    counts = stream.counts
    assert (counts.rows_read, counts.truncated, counts.left_out, counts.passes) == (6, 2, 1, 1)


def test_a_streamed_run_trains_max_steps_over_several_passes(tmp_path, tiny_model, data_dir):
    """20 rows, batch 2, 14 steps: 28 rows, so a second pass; the console and metrics.json say what was read."""
    training = {"max_steps": 14, "per_device_train_batch_size": 2, "logging_steps": 7}
    data = {"streaming": True, "shuffle_buffer": 6, "validation": str(data_dir / "alpaca_val.jsonl")}
    recipe = base_recipe(tiny_model, data_dir, tmp_path / "run", training=training, data=data)
    done = call_cli(write_recipe(tmp_path / "r.yaml", recipe))
    out = done.stdout + done.stderr
    assert "alpaca rows streamed, shuffled 6 at a time; the first 20 checked, 4 validation" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    stream = metrics["streaming"]
    assert metrics["train_steps"] == 14 and metrics["train_examples"] == 28 and "eval_loss" in metrics
    assert stream["passes"] == 2 and 28 <= stream["rows_read"] <= 40 and stream["bad_rows_skipped"] == 0
    assert f"streamed {stream['rows_read']} rows in 2 passes" in out
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
