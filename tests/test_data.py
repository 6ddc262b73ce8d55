"""Data rendering and label masking: which tokens train, the training chat template, the pad token."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import SMOLLM2, base_recipe
from llm_tune.data.chat_templates import TEMPLATES, training_chat_template
from llm_tune.model.loading import choose_pad_token
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6\n\nDone."},
    ],
    [{"role": "user", "content": "Only a question"}],
]


@pytest.fixture(scope="module")
def tokenizer():
    tok = AutoTokenizer.from_pretrained(SMOLLM2)
    choose_pad_token(tok)
    return tok


@pytest.mark.fast
def test_pad_token_is_not_eos(tokenizer):
    assert AutoTokenizer.from_pretrained(SMOLLM2).pad_token == tokenizer.eos_token  # as shipped
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


@pytest.mark.fast
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_training_template_renders_byte_identically(tokenizer, generation_prompt):
    stock = (TEMPLATES / "smollm2.jinja").read_text()
    assert tokenizer.chat_template == stock
    training = training_chat_template(tokenizer)
    assert training != stock and "{% generation %}" in training
    for messages in CONVERSATIONS:
        kwargs = dict(tokenize=False, add_generation_prompt=generation_prompt)
        assert tokenizer.apply_chat_template(messages, chat_template=training, **kwargs) == (
            tokenizer.apply_chat_template(messages, **kwargs)
        )


def _trained_spans(recipe: Recipe, tokenizer) -> list[list[str]]:
    """Build the real trainer from the recipe and decode each row's trained (label != -100) spans."""
    from llm_tune.data.formats import load_splits
    from llm_tune.model.loading import load_model
    from llm_tune.train.trainer import build_trainer

    if recipe.data.format == "chat":
        tokenizer.chat_template = training_chat_template(tokenizer)
    splits = load_splits(recipe.data, None, tokenizer)
    model = load_model(recipe.model, tokenizer)
    trainer = build_trainer(recipe, model, tokenizer, splits, RunFolder(Path(recipe.output_dir)))
    spans = []
    for row in trainer.train_dataset:
        labels, current, row_spans = row["labels"], [], []
        for token, label in zip(row["input_ids"], labels):
            if label == -100 and current:
                row_spans.append(tokenizer.decode(current))
                current = []
            elif label != -100:
                current.append(token)
        if current:
            row_spans.append(tokenizer.decode(current))
        spans.append(row_spans)
    return spans


def test_alpaca_trains_on_the_response_and_its_eos_only(tiny_model, data_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    choose_pad_token(tokenizer)
    recipe = Recipe.model_validate(base_recipe(tiny_model, data_dir, tmp_path / "run"))
    spans = _trained_spans(recipe, tokenizer)
    assert spans[0] == ["31<|im_end|>\n"]  # "Add 1 and 30." -> "31", then the end-of-turn EOS
    assert all(len(s) == 1 and s[0].endswith(f"{tokenizer.eos_token}\n") for s in spans)


def test_chat_trains_on_every_assistant_turn_only(tiny_model, data_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    choose_pad_token(tokenizer)
    recipe = Recipe.model_validate(
        base_recipe(
            tiny_model, data_dir, tmp_path / "run", data={"train": str(data_dir / "chat.jsonl"), "format": "chat"}
        )
    )
    spans = _trained_spans(recipe, tokenizer)
    assert spans[0] == ["hello<|im_end|>", "HELLO!<|im_end|>"]


def test_train_on_prompt_trains_everything(tiny_model, data_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    choose_pad_token(tokenizer)
    recipe = Recipe.model_validate(base_recipe(tiny_model, data_dir, tmp_path / "run", data={"train_on_prompt": True}))
    spans = _trained_spans(recipe, tokenizer)
    assert len(spans[0]) == 1 and spans[0][0].startswith("<|im_start|>system")
