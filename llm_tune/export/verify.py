"""Verification of an export: the same prompts through the model as trained and the exported one, compared
by their logits and their greedy generations. An export that changes the model beyond the tolerance of
its dtype fails, so a merge can never be silently wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_tune.recipe.schema import Recipe

if TYPE_CHECKING:
    import torch

# Largest |logit difference| accepted per dtype of the compared models. float32 allows only summation-order
# noise; the 16-bit dtypes allow their rounding of every weight and activation (bfloat16 keeps 8 bits of
# mantissa, so logits around 20 move by ~0.1 per rounding, compounded over the layers).
TOLERANCE = {"float32": 1e-2, "float16": 0.25, "bfloat16": 1.0}

# Used when the run's data files are gone: short prompts that any causal LM can continue.
FALLBACK_PROMPTS = ("Write one sentence about the sea.", "What is 12 plus 30?")


@dataclass
class Outputs:
    """What one model produced for the prompts: logits per prompt, and greedy tokens (or the argmax label)."""

    logits: list[torch.Tensor]
    greedy: list[list[int]]


def verification_prompts(recipe: Recipe, tokenizer: Any, count: int, max_tokens: int = 256) -> list[list[int]]:
    """Token ids of up to `count` prompts: validation rows when there are any, else training rows."""
    rows = rendered_rows(recipe, tokenizer, count)
    prompts = [row_prompt_ids(tokenizer, row)[-max_tokens:] for row in rows]
    prompts = [p for p in prompts if p]
    if prompts:
        return prompts
    return [row_prompt_ids(tokenizer, {"prompt": _fallback(tokenizer, text)}) for text in FALLBACK_PROMPTS]


def _fallback(tokenizer: Any, text: str) -> Any:
    return [{"role": "user", "content": text}] if tokenizer.chat_template else text


def rendered_rows(recipe: Recipe, tokenizer: Any, count: int) -> list[dict[str, Any]]:
    """Up to `count` good rows of the run's data in TRL's format, validation first; [] if the files are gone."""
    from llm_tune.data.formats import read_rows, render, row_problem
    from llm_tune.errors import UserError

    for spec in (recipe.data.validation, recipe.data.train):
        if not spec:
            continue
        try:
            rows = read_rows(spec)
        except UserError:
            continue  # data moved since training: the fallback prompts still verify the export
        labels = recipe.classification.labels
        good = [i for i in range(min(len(rows), 10 * count)) if row_problem(rows[i], recipe.data, labels) is None]
        if good:
            picked = rows.select(good[:count])
            return list(render(picked, recipe.data, labels, tokenizer.chat_template is not None))
    return []


def row_prompt_ids(tokenizer: Any, row: dict[str, Any]) -> list[int]:
    """The part of a row the model is asked to continue: the prompt, the chat up to its last reply, or half a text."""
    from llm_tune.data.formats import prompt_ids

    if "prompt" in row:
        return prompt_ids(tokenizer, row["prompt"])
    if "messages" in row:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return prompt_ids(tokenizer, messages[:last] or messages[:1])
    ids = tokenizer(row["text"])["input_ids"]
    return ids[: max(1, len(ids) // 2)]


def run_prompts(model: Any, prompts: list[list[int]], *, classifier: bool, new_tokens: int, stop: list[int], pad: int) -> Outputs:
    """Logits (float32, on the CPU) and greedy continuations, one prompt at a time so no padding is involved."""
    import torch

    from llm_tune.generation import decoding

    model.eval()
    device = next(model.parameters()).device
    logits, greedy = [], []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt], device=device)
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float().cpu()
            logits.append(out)
            if classifier:
                greedy.append([int(out.argmax(-1))])
                continue
            greedy.append(decoding.greedy(model, prompt, max_new_tokens=new_tokens, stop=stop, pad=pad))
    return Outputs(logits, greedy)


def compare(reference: Outputs, candidate: Outputs) -> dict[str, Any]:
    """Max |logit difference| over every prompt and position, and how often the greedy tokens agree."""
    diff = max(float((a - b).abs().max()) for a, b in zip(reference.logits, candidate.logits))
    same = total = exact = 0
    for a, b in zip(reference.greedy, candidate.greedy):
        width = max(len(a), len(b))
        same += sum(x == y for x, y in zip(a, b))
        total += width
        exact += a == b
    return {
        "max_abs_logit_diff": diff,
        "greedy_token_agreement": same / total if total else 1.0,
        "greedy_exact_match": f"{exact}/{len(reference.greedy)}",
    }


def within_tolerance(result: dict[str, Any], dtype: str) -> bool:
    return result["max_abs_logit_diff"] <= TOLERANCE[dtype]


def describe(name: str, result: dict[str, Any]) -> str:
    return (
        f"{name}: max |logit diff| {result['max_abs_logit_diff']:.3g}, greedy token agreement"
        f" {result['greedy_token_agreement']:.1%} (exact {result['greedy_exact_match']})"
    )
