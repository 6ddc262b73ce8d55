"""Classification heads: encoding rows for a sequence classifier, and scoring labels with a generate head
by their log-likelihood (never free-text parsing, so there is never an "unknown" answer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Any) -> list[int]:
    """Token ids of a rendered prompt, ending where the answer starts."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]


def encode_for_classifier(
    tokenizer: PreTrainedTokenizerBase, labels: list[str], max_length: int
) -> Callable[[dict[str, list[Any]]], dict[str, list[Any]]]:
    """Batched map: the prompt up to where the answer would start (the pooled last token), and the label id."""
    label_id = {label: i for i, label in enumerate(labels)}

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        # Keep the end: the pooled position is the last token, where the answer would begin.
        ids = [prompt_ids(tokenizer, prompt)[-max_length:] for prompt in batch["prompt"]]
        return {
            "input_ids": ids,
            "attention_mask": [[1] * len(x) for x in ids],
            "labels": [label_id[label] for label in batch["label"]],
        }

    return encode
