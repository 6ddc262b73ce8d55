"""Verification of an export: the same prompts through the model as trained and the exported one, compared
by their logits and their greedy generations. An export that changes the model beyond the tolerance of
its dtype fails, so a merge can never be silently wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_tune.data.prompts import rendered_rows, row_prompt_ids
from llm_tune.recipe.schema import Recipe

if TYPE_CHECKING:
    import torch

# Largest |logit difference| accepted per dtype of the compared models. float32 allows only summation-order
# noise; the 16-bit dtypes allow their rounding of every weight and activation (bfloat16 keeps 8 bits of
# mantissa, so logits around 20 move by ~0.1 per rounding, compounded over the layers).
TOLERANCE = {"float32": 1e-2, "float16": 0.25, "bfloat16": 1.0}

# Largest |logit difference| between a GGUF (reloaded by transformers, computing in float32) and the merged
# float32 model it was written from, per GGUF type. Only the stored weights differ, so each type is charged its
# own rounding: f32 none (summation-order noise, as float32 above); f16 keeps 11 bits of mantissa, bf16 8, and
# q8_0 stores each block of 32 weights as 8-bit integers times an f16 scale, which also rounds the tied
# embedding that projects onto the vocabulary. Measured on SmolLM2-135M (instruct-lora, 5 steps, 4 prompts;
# README, GGUF): 0, 0.051, 0.55 and 1.82; each tolerance leaves about 3x that. A wrong layout or metadata value
# moves logits by far more, and the f32 export, exact in practice, is what pins those (tests/test_gguf.py).
GGUF_TOLERANCE = {"f32": 1e-2, "f16": 0.25, "bf16": 1.5, "q8_0": 5.0}

# Text checked beside the verification prompts in the tokenizer round trip: digits, runs of spaces, a tab,
# newlines and non-ASCII, where tokenizers that split text differently disagree.
TOKENIZER_PROBE = "Add 12 and 3405.\n\n  Three   spaces,\ta tab, 'quotes', café, 東京 and 🙂."

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


def run_prompts(
    model: Any, prompts: list[list[int]], *, classifier: bool, new_tokens: int, stop: list[int], pad: int
) -> Outputs:
    """Logits (float32, on the CPU) and greedy continuations, one prompt at a time so no padding is involved."""
    import torch

    from llm_tune.model import decoding

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


def tokenizer_round_trip(reference: Any, candidate: Any, prompts: list[list[int]], chat_template: str | None) -> dict:
    """Whether `candidate` (an export's tokenizer) tokenizes as `reference` (the run's) does: the same ids for
    the text of every verification prompt and the probe text, the same text back from those ids, the same
    special tokens and the same chat template."""
    texts = [reference.decode(prompt) for prompt in prompts] + [TOKENIZER_PROBE]
    ids = [reference(text)["input_ids"] for text in texts]
    specials = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")
    result = {
        "texts": len(texts),
        "same_ids": sum(candidate(text)["input_ids"] == i for text, i in zip(texts, ids)),
        "same_decoding": sum(candidate.decode(i) == reference.decode(i) for i in ids),
        "special_tokens": {name: [getattr(reference, name), getattr(candidate, name)] for name in specials},
        "chat_template_same": candidate.chat_template == chat_template,
    }
    result["ok"] = (
        result["same_ids"] == result["same_decoding"] == len(texts)
        and all(a == b for a, b in result["special_tokens"].values())
        and result["chat_template_same"]
    )
    return result


def describe_tokenizer(result: dict[str, Any]) -> str:
    specials = "the same" if all(a == b for a, b in result["special_tokens"].values()) else "DIFFERENT"
    template = "the same" if result["chat_template_same"] else "DIFFERENT"
    return (
        f"{result['same_ids']}/{result['texts']} texts give the same ids,"
        f" {result['same_decoding']}/{result['texts']} decode the same; special tokens {specials},"
        f" chat template {template}"
    )
