"""A single-label sequence classifier as a causal LM that llama.cpp and Ollama can run: the trained head's rows
are folded into the LM head at each label's first answer token (the inverse of classification.init_head_from_labels;
divided by the run's temperature), on an untied copy of the embeddings, so nothing else the model reads changes.
The next-token scores of the label tokens at the end of the prompt are then exactly the classifier's logits, and a
softmax over them its probabilities.

Verified on the validation rows: the folded model through transformers, and the GGUF file loaded back, must give
the classifier's label logits within the export type's logit tolerance (export/verify.py); the prediction agreement
and the largest probability difference are reported beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_tune.errors import UserError
from llm_tune.export import verify

if TYPE_CHECKING:
    from llm_tune.export.job import Job

WHERE = "export --format gguf"
MAX_ROWS = 2000  # validation rows compared; SST-2's 872 all fit


def check_foldable(job: Job, tokenizer: Any) -> None:
    """Refuse, before anything loads, a classifier that cannot be folded into LM-head rows."""
    from llm_tune.classification.heads import label_token_ids
    from llm_tune.classification.problems import problem_of

    recipe = job.recipe
    if not problem_of(recipe).folds_to_lm_head:
        raise UserError(
            f"{WHERE}: a {recipe.data.format} head has no next-token form (its outputs are not one softmax over"
            " labels); export it with --format safetensors"
        )
    labels = recipe.classification.labels
    first = [ids[0] for ids in label_token_ids(tokenizer, labels)]
    if len(set(first)) != len(first):
        raise UserError(
            f"{WHERE}: the labels {labels} do not each start with their own token, so their scores cannot be folded"
            " into LM-head rows; export with --format safetensors, or use labels that start with different words"
        )


def fold(classifier: Any, job: Job) -> Any:
    """The causal LM whose label-token scores are the classifier's (float32, LM head untied from the embeddings)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from llm_tune.classification.heads import label_token_ids

    if not getattr(classifier.config, "tie_word_embeddings", False):
        raise UserError(f"{WHERE}: folding needs a model whose LM head is its embeddings (tied); this one is not")
    config = copy.deepcopy(classifier.config)
    config.tie_word_embeddings = False  # the label rows change in the LM head only, not in the input embeddings
    config.architectures = [type(classifier).__name__.replace("ForSequenceClassification", "ForCausalLM")]
    for key in ("id2label", "label2id", "problem_type"):
        config.__dict__.pop(key, None)
    lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    lm.model.load_state_dict(classifier.model.state_dict())
    weight = classifier.get_input_embeddings().weight.detach().float().clone()
    rows = [ids[0] for ids in label_token_ids(job.tokenizer, job.recipe.classification.labels)]
    weight[rows] = classifier.score.weight.detach().float() / (job.recipe.classification.temperature or 1.0)
    lm.lm_head.weight = torch.nn.Parameter(weight)
    lm.config.use_cache = True
    return lm.eval()


def validation_prompts(job: Job) -> list[list[int]]:
    """The validation rows' prompts as token ids (the verification prompts when the run has no validation file)."""
    from pathlib import Path

    from llm_tune.classification.rows import classification_rows
    from llm_tune.data.prompts import prompt_ids

    # A classifier validates on one file (recipe/checks.py refuses a list of validation sources for it).
    spec = job.recipe.data.validation_label
    if spec is None or not Path(spec).is_file():
        return job.prompts
    rows = classification_rows(job.recipe, spec, job.tokenizer)
    return [prompt_ids(job.tokenizer, p) for p in rows["prompt"][:MAX_ROWS]]


def classifier_logits(classifier: Any, job: Job, prompts: list[list[int]]) -> Any:
    """[rows, labels] the classifier's logits / temperature, one prompt at a time (as `label_logits`)."""
    import torch

    out = torch.empty(len(prompts), len(job.recipe.classification.labels))
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([prompt])
            out[i] = classifier(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()
    return out / (job.recipe.classification.temperature or 1.0)


def label_logits(lm: Any, job: Job, prompts: list[list[int]]) -> Any:
    """[rows, labels] next-token logits of the label tokens after each prompt, one prompt at a time (no padding)."""
    import torch

    from llm_tune.classification.heads import label_token_ids

    rows = [ids[0] for ids in label_token_ids(job.tokenizer, job.recipe.classification.labels)]
    out = torch.empty(len(prompts), len(rows))
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([prompt])
            out[i] = (
                lm(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits[0, -1, rows].float()
            )
    return out


def agreement(reference: Any, candidate: Any) -> dict[str, Any]:
    """Max |label logit diff|, max |probability diff| and the share of rows with the same predicted label."""
    import torch

    p, q = torch.softmax(reference, -1), torch.softmax(candidate, -1)
    same = int((reference.argmax(-1) == candidate.argmax(-1)).sum())
    return {
        "rows": len(reference),
        "max_abs_logit_diff": float((reference - candidate).abs().max()),
        "max_abs_probability_diff": float((p - q).abs().max()),
        "prediction_agreement": same / len(reference),
        # the names the model card's verification table reads: here the predicted label is the "greedy token"
        "greedy_token_agreement": same / len(reference),
        "greedy_exact_match": f"{same}/{len(reference)}",
    }


def gate(job: Job, name: str, result: dict[str, Any], tolerance: float, dtype: str) -> None:
    """Record the check; refuse the export beyond `tolerance` on the label logits."""
    from llm_tune.console import say
    from llm_tune.export.job import ExportFailed

    job.checks[name] = result
    job.gate = {
        "check": name,
        "dtype": dtype,
        "tolerance": tolerance,
        "on": "label-token logits of the validation rows",
    }
    say(
        f"verify {name}: {result['rows']} rows, max |label logit diff| {result['max_abs_logit_diff']:.3g}, max |p diff|"
        f" {result['max_abs_probability_diff']:.3g}, same prediction {result['prediction_agreement']:.2%}"
    )
    if not result["max_abs_logit_diff"] <= tolerance:  # NaN fails too
        raise ExportFailed(
            f"export verification failed: {name}: max |label logit diff| {result['max_abs_logit_diff']:.4g} exceeds"
            f" the tolerance {tolerance:.4g} (same prediction on {result['prediction_agreement']:.1%} of"
            f" {result['rows']} rows); no export was written"
        )


def fold_and_verify(job: Job, classifier: Any) -> tuple[Any, Any, list[list[int]]]:
    """(folded LM, the classifier's label logits, the prompts) after gating the folded LM against the classifier."""
    prompts = validation_prompts(job)
    reference = classifier_logits(classifier, job, prompts)
    lm = fold(classifier, job)
    result = agreement(reference, label_logits(lm, job, prompts))
    gate(job, "folded_vs_classifier", result, verify.TOLERANCE["float32"], "float32")
    return lm, reference, prompts


def verify_gguf(job: Job, reloaded: Any, reference: Any, prompts: list[list[int]]) -> None:
    kind = job.options.gguf_type
    result = agreement(reference, label_logits(reloaded, job, prompts))
    gate(job, f"gguf_{kind}_vs_classifier", result, verify.GGUF_TOLERANCE[kind], kind)


def folded_card_facts(job: Job) -> dict[str, Any]:
    """What the model card needs to run the folded classifier: each label's token id and the prompt template."""
    from llm_tune.classification.heads import label_token_ids
    from llm_tune.data.formats import user_prompt

    labels = job.recipe.classification.labels
    conversational = job.tokenizer.chat_template is not None
    prompt = user_prompt("{text}", job.recipe.data, labels, conversational, "{text_pair}")
    if conversational:
        prompt = job.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return {
        "label_tokens": {label: ids[0] for label, ids in zip(labels, label_token_ids(job.tokenizer, labels))},
        "prompt": prompt,
        "temperature": job.recipe.classification.temperature,
    }


def folded_usage(folded: dict[str, Any], file: str) -> str:
    """The model card's section: the classifier's probabilities from llama.cpp's server."""
    import json

    bias = [[token, 100] for token in folded["label_tokens"].values()]
    request = {"prompt": "PROMPT", "n_predict": 1, "n_probs": len(bias), "logit_bias": bias}
    return "\n".join(
        [
            "## As a classifier (folded head)\n",
            "This run trained a classification head; the export folds it into the LM-head rows of the labels' first"
            f" tokens ({', '.join(f'`{k}`: {v}' for k, v in folded['label_tokens'].items())}), so the next-token scores of"
            " those tokens after the prompt are the classifier's logits"
            + (f" (divided by its calibrated temperature {folded['temperature']:.4g})" if folded["temperature"] else "")
            + ", and a softmax over them its probabilities (verified on the validation rows, see Verification). Other"
            " tokens keep the base model's rows: read the label tokens' scores, not free generation.\n",
            "The prompt, with the text in place of `{text}` (special tokens as written):\n",
            "```text",
            folded["prompt"],
            "```\n",
            "llama.cpp: an equal bias on the label tokens leaves their differences as they are and puts them above every"
            " other token, so the probabilities the server returns are the classifier's:\n",
            "```bash",
            f"llama-server -m {file} --port 8080",
            f"curl http://localhost:8080/completion -d '{json.dumps(request)}'",
            "```",
        ]
    )
