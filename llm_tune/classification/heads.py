"""Classification heads: encoding rows for a sequence classifier, and scoring labels with a generate head
by their log-likelihood (never free-text parsing, so there is never an "unknown" answer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llm_tune.data.prompts import prompt_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def init_head_from_label_tokens(model: Any, tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> bool:
    """Copy the LM-head rows of each label's first answer token into the new classification head.

    The head then computes exactly the logits the language model gives those tokens where the answer
    starts; only models whose LM head is tied to the input embeddings (still loaded) qualify."""
    import torch

    head = getattr(model, "score", None)
    if not getattr(model.config, "tie_word_embeddings", False) or not isinstance(head, torch.nn.Linear):
        return False
    from llm_tune.model.loading import whole_parameters

    rows = [ids[0] for ids in label_token_ids(tokenizer, labels)]
    embeddings = model.get_input_embeddings().weight
    with whole_parameters(head.weight, embeddings, modify=True), torch.no_grad():  # ZeRO-3: whole on rank 0
        head.weight.copy_(embeddings[rows].to(head.weight.dtype))
    return True


def classifier_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: Any, max_length: int, answer: int = 0
) -> list[int]:
    """The prompt's tokens as a classifier reads them, in training and in eval / predict alike: the last
    `max_length - answer` (the end holds where the answer starts, which the sequence head pools and the generate
    head continues; `answer`: the tokens the longest label takes after it)."""
    return cut_for_classifier(prompt_ids(tokenizer, prompt), max_length, answer)


def cut_for_classifier(ids: list[int], max_length: int, answer: int = 0) -> list[int]:
    """Where a classifier's prompt is cut: the end stays (see classifier_prompt_ids)."""
    return ids[-max(1, max_length - answer) :]


def encode_for_classifier(
    tokenizer: PreTrainedTokenizerBase, labels: list[str], max_length: int, target: Callable[[Any], Any] | None = None
) -> Callable[[dict[str, list[Any]]], dict[str, list[Any]]]:
    """Batched map: the prompt up to where the answer would start (the pooled last token), and the training target
    (`target` of the row's label: by default the label id)."""
    label_id = target or {label: i for i, label in enumerate(labels)}.__getitem__

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        whole = [prompt_ids(tokenizer, prompt) for prompt in batch["prompt"]]
        ids = [cut_for_classifier(x, max_length) for x in whole]
        return {
            "input_ids": ids,
            "attention_mask": [[1] * len(x) for x in ids],
            "labels": [label_id(label) for label in batch["label"]],
            "length": [len(x) for x in whole],  # before truncation: the run's truncation count
        }

    return encode


def label_probabilities(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Any],
    labels: list[str],
    head: str,
    batch_size: int,
    max_length: int,
    autocast: bool = False,
    temperature: float | None = None,
) -> Any:
    """[rows, labels] probabilities (a softmax over `head_scores` / `temperature`), in the rows' order."""
    import torch

    scores = head_scores(model, tokenizer, prompts, labels, head, batch_size, max_length, autocast)
    return torch.softmax(scores / (temperature or 1.0), dim=-1).numpy()


def head_scores(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Any],
    labels: list[str],
    head: str,
    batch_size: int,
    max_length: int,
    autocast: bool = False,
) -> Any:
    """[rows, outputs] raw scores (a sequence head's logits, or a generate head's label log-likelihoods) in the rows'
    order, computed batch by batch over rows sorted by length (little padding; full-vocabulary logits never outlive
    a batch), under bfloat16 autocast when training used it. Prompts are cut as training cut them (classifier_prompt_ids)."""
    import torch
    from tqdm.auto import tqdm

    from llm_tune.console import is_main_process, on_terminal

    model.eval()
    answer = 0 if head == "sequence" else max(len(a) for a in label_token_ids(tokenizer, labels))
    ids = [classifier_prompt_ids(tokenizer, p, max_length, answer) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: memory peaks at once
    scores = torch.empty(len(ids), model.config.num_labels if head == "sequence" else len(labels))
    device = next(model.parameters()).device
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast),
        tqdm(
            total=len(ids), desc="Scoring", unit="row", disable=not (is_main_process() and on_terminal()), leave=False
        ) as bar,
    ):
        for start in range(0, len(order), batch_size):
            picked = order[start : start + batch_size]
            batch = [ids[i] for i in picked]
            if head == "sequence":
                batch_scores = _sequence_logits(model, tokenizer, batch)
            else:
                batch_scores = _label_loglikelihoods(model, tokenizer, batch, labels)
            scores[picked] = batch_scores.float().cpu()
            bar.update(len(picked))
    return scores


def _padded(tokenizer: PreTrainedTokenizerBase, rows: list[list[int]], side: str, device: Any) -> tuple[Any, Any]:
    """Token rows as one padded batch (ids, attention mask) on `device`."""
    batch = tokenizer.pad({"input_ids": rows}, padding=True, padding_side=side, return_tensors="pt")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def _sequence_logits(model: Any, tokenizer: PreTrainedTokenizerBase, batch: list[list[int]]) -> Any:
    # Right padding: the classifier pools the last non-pad token of each row.
    ids, mask = _padded(tokenizer, batch, "right", next(model.parameters()).device)
    return model(input_ids=ids, attention_mask=mask).logits


def label_token_ids(tokenizer: PreTrainedTokenizerBase, labels: list[str]) -> list[list[int]]:
    """Each label's answer tokens as training rendered them: the label text, then EOS."""
    return [tokenizer(label, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for label in labels]


def _label_loglikelihoods(
    model: Any, tokenizer: PreTrainedTokenizerBase, batch: list[list[int]], labels: list[str]
) -> Any:
    """Sum of log p(answer tokens | prompt) for every (row, label); only the answer positions' logits are kept."""
    import torch

    answers = label_token_ids(tokenizer, labels)
    rows = [prompt + answer for prompt in batch for answer in answers]
    keep = max(len(a) for a in answers) + 1
    ids, mask = _padded(tokenizer, rows, "left", next(model.parameters()).device)
    # Positions count real tokens only, so a left-padded row scores as it would alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # position t predicts token t+1
    scores = torch.empty(len(rows))
    for r, answer in enumerate(answers * len(batch)):
        targets = ids[r, -len(answer) :]
        scores[r] = logprobs[r, -len(answer) :].gather(-1, targets[:, None]).sum()
    return scores.view(len(batch), len(labels))
