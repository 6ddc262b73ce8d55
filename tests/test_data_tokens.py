"""Tokenized once, in batches: the sequences llm_tune hands the SFTTrainer equal TRL's own preparation of the same
rows, token for token and label for label, for every row shape llm_tune renders; and the rows TRL would drop
silently (no trained token left after truncation) are dropped here too, with a count."""

from __future__ import annotations

import pytest

from conftest import SMOLLM2

ROWS = [  # short and long answers, an input field, non-ASCII, a completion that already ends in EOS
    ("Add 2 and 3.", "5"),
    ("Translate to French: good morning, my friend, how are you today?", "Bonjour mon ami, comment vas-tu ?"),
    ("Écris « bonjour » trois fois.", "bonjour bonjour bonjour " * 6),
    ("Name a colour.\n\nOne word only.", "blue"),
]


def shapes(tokenizer) -> dict[str, list[dict]]:
    def chat(user, answer):
        return [{"role": "system", "content": ""}, {"role": "user", "content": user}], [
            {"role": "assistant", "content": answer}]  # fmt: skip

    return {
        "prompt-completion, conversational": [dict(zip(("prompt", "completion"), chat(u, a))) for u, a in ROWS],
        "prompt-completion, plain": [
            {"prompt": f"### Instruction:\n{u}\n\n### Response:\n", "completion": a} for u, a in ROWS
        ],  # fmt: skip
        "messages": [
            {
                "messages": [
                    {"role": "user", "content": u},
                    {"role": "assistant", "content": a},
                    {"role": "user", "content": "Again."},
                    {"role": "assistant", "content": a},
                ]
            }
            for u, a in ROWS
        ],  # fmt: skip
        "text": [{"text": f"{u} {a}"} for u, a in ROWS[:-1]] + [{"text": "ends in eos" + tokenizer.eos_token}],
    }


def trl_prepared(rows, tokenizer, *, completion_only, assistant_only, max_length, tiny_model):
    """TRL's own preparation: an SFTTrainer's train_dataset built from the same rows."""
    import tempfile

    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(output_dir=tempfile.mkdtemp(), max_length=max_length, completion_only_loss=completion_only,
                       assistant_only_loss=assistant_only, report_to=[], use_cpu=True, bf16=False)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    return trainer.train_dataset


@pytest.mark.parametrize("shape", ["prompt-completion, conversational", "prompt-completion, plain", "messages", "text"])
@pytest.mark.parametrize("max_length", [None, 24])
@pytest.mark.parametrize("completion_only", [True, False])
def test_batched_tokenization_equals_trls_preparation(shape, max_length, completion_only, tiny_model):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from llm_tune.data.chat_templates import training_chat_template
    from llm_tune.data.tokens import tokenize_sft

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    assistant_only = shape == "messages" and completion_only  # as llm_tune configures TRL for chat rows
    if assistant_only:
        tokenizer.chat_template = training_chat_template(tokenizer, None)
    if shape == "prompt-completion, plain":
        tokenizer.chat_template = None
    rows = shapes(tokenizer)[shape]
    ours = tokenize_sft(Dataset.from_list(rows), tokenizer, completion_only=completion_only,
                        assistant_only=assistant_only, max_length=max_length, packing=False)  # fmt: skip
    theirs = trl_prepared(rows, tokenizer, completion_only=completion_only, assistant_only=assistant_only,
                          max_length=max_length, tiny_model=tiny_model)  # fmt: skip
    assert ours.dataset["input_ids"] == theirs["input_ids"]
    assert ours.dataset["labels"] == theirs["labels"]
    assert ours.rows - ours.emptied == len(theirs)  # what TRL drops silently is counted here
    assert ours.truncated == (sum(n > max_length for n in ours.lengths) if max_length else 0)
    if max_length == 24 and shape.startswith("prompt-completion") and completion_only:
        assert ours.emptied > 0  # the long prompts keep no answer token: the case TRL drops without a word


def test_lengths_are_the_untruncated_token_counts():
    from datasets import Dataset
    from transformers import AutoTokenizer

    from llm_tune.data.tokens import tokenize_sft

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    rows = [{"text": "one two three"}, {"text": "a much longer text than the first, to be cut " * 3}]
    done = tokenize_sft(Dataset.from_list(rows), tokenizer, completion_only=False, assistant_only=False,
                        max_length=8, packing=False)  # fmt: skip
    expected = [len(tokenizer(r["text"] + tokenizer.eos_token)["input_ids"]) for r in rows]
    assert done.lengths == expected and expected[1] > 8 >= expected[0]
    assert done.truncated == 1 and [len(x) for x in done.dataset["input_ids"]] == [expected[0], 8]
