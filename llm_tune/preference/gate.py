"""The step-0 gate: before the first optimizer step, the run's first training rows are scored through the trainer's
own loss, and what must hold at the start is checked. A failed check stops the run with one line.

DPO and KTO start with the reference equal to the policy (preference.reference: start), so every log-ratio
log pi(y|x) - log ref(y|x) is 0: the sigmoid DPO loss is ln 2, rewards and margins are 0, reward accuracy is 0
(chosen > rejected never holds between equal rewards), and KTO's loss is half the weighted mean of its weights.
The policy and the reference run the same kernels on the same weights, so their log-probabilities agree to the last
bit (measured: 0.0 on every test run); LOGP_TOLERANCE allows float reordering without letting a wrong reference
through (a reference one SFT step away differs by more than 0.1 nat per answer, tests/test_preference.py).
ORPO and SimPO have no reference and no fixed starting loss: their log-probabilities and loss must be finite, each
answer must carry trained tokens (a log-probability below 0), and chosen and rejected must score differently."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.recipe.methods import method_of
from llm_tune.recipe.schema import Recipe

LOGP_TOLERANCE = 1e-3  # nats of a summed answer log-probability, policy vs reference at step 0
GATE_ROWS = 4  # rows (pairs) scored: the first of the training set; a few suffice, each costs four forward passes

# Loss of each DPO loss_type when every log-ratio is 0 (beta-independent unless given as a function of beta).
DPO_START = {
    "sigmoid": lambda beta: math.log(2),
    "robust": lambda beta: math.log(2),
    "hinge": lambda beta: 1.0,
    "ipo": lambda beta: (1 / (2 * beta)) ** 2,
    "apo_zero": lambda beta: 1.0,
    "bco_pair": lambda beta: 2 * math.log(2),
    "nca_pair": lambda beta: 2 * math.log(2),
    "sigmoid_norm": lambda beta: math.log(2),
}


class StepZeroFailure(UserError):
    """The run is not what the recipe meant at its first step (reference, masking, data)."""


def check_step_zero(trainer: Any, recipe: Recipe) -> dict[str, Any]:
    """The step-0 values (loss, rewards, log-probabilities); raises StepZeroFailure when a check fails."""
    import torch

    method, rule = method_of(recipe), RULES[recipe.preference.method]
    inputs = _first_batch(trainer)
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        # Training runs the policy under the accelerator's autocast (the prepared model's forward) and TRL the
        # reference too; the model is prepared only when training starts, so the gate enters the autocast itself.
        with torch.no_grad(), trainer.compute_loss_context_manager(), trainer.accelerator.autocast():
            if method.logged_loss:
                values = _logged_loss(trainer, model, inputs)
            else:
                loss, metrics = trainer.get_batch_loss_metrics(model, inputs, train_eval="train")
                values = {"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}
            if rule.per_row is not None:
                values.update(rule.per_row(trainer, model, inputs))
    finally:
        model.train(was_training)
    values["rows"] = int(rule.rows(inputs))
    problems = _problems(values, recipe, inputs)
    say(_line(values, recipe, problems))
    if problems:
        raise StepZeroFailure(f"step 0: {problems[0]}")
    return {k: v for k, v in values.items() if not k.startswith("_")}


def _first_batch(trainer: Any) -> dict[str, Any]:
    """The first training rows, collated as training collates them; the training order is not touched."""
    dataset = trainer.train_dataset
    subset = dataset.select(range(min(GATE_ROWS, len(dataset))))
    loader = trainer.get_eval_dataloader(subset)
    return trainer._prepare_inputs(next(iter(loader)))


def _rows(inputs: dict[str, Any]) -> int:
    """Rows of a batch that holds each row once."""
    for key in ("label", "chosen_input_ids", "completion_input_ids", "input_ids"):
        if key in inputs:
            return len(inputs[key])
    return 0


def _logged_loss(trainer: Any, model: Any, inputs: dict[str, Any]) -> dict[str, float]:
    """The trainer's loss on the batch and the metrics it logs for it (TRL's names), leaving its log as it was."""
    store = trainer._metrics["eval"]
    saved = {k: list(v) for k, v in store.items()}
    store.clear()
    try:
        loss = float(trainer.compute_loss(model, inputs))
        logged = {k: sum(v) / len(v) for k, v in store.items() if v and k != "num_tokens"}
    finally:
        store.clear()
        store.update(saved)
    return {"loss": loss, **logged}


def _dpo_rows(trainer: Any, model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """Per-pair policy and reference log-probabilities, computed as TRL's DPO loss computes them."""
    import torch

    mask = inputs["completion_mask"]
    kwargs = {k: v for k, v in inputs.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
    labels = inputs["input_ids"].masked_fill(mask == 0, -100)
    per_token = model(**kwargs, use_cache=False, labels=labels, fused_lm_head=True).log_probs
    policy = per_token[:, -(mask.size(1) - 1) :].sum(dim=1)
    if "ref_chosen_logps" in inputs:
        reference = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
    else:
        reference = torch.cat(trainer.compute_ref_log_probs(model, inputs))
    chosen, rejected = policy.float().chunk(2)
    return {
        "_policy": policy.float().tolist(),
        "_reference": reference.float().tolist(),
        "_pairs_equal": int((chosen == rejected).sum()),
        "max_abs_policy_minus_reference_logp": float((policy.float() - reference.float()).abs().max()),
    }


def _problems(values: dict[str, Any], recipe: Recipe, inputs: dict[str, Any]) -> list[str]:
    problems = [
        f"{k} is {v}, not a finite number" for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)
    ]
    for key in ("logps/chosen", "logps/rejected"):
        if key in values and values[key] >= 0:
            problems.append(f"{key} is {values[key]:.4g}: an answer without trained tokens (all masked or truncated)")
    return problems + RULES[recipe.preference.method].problems(values, recipe, inputs)


def _kto_problems(values: dict[str, Any], recipe: Recipe, inputs: dict[str, Any]) -> list[str]:
    """KTO from a reference equal to the policy: the loss is half the weighted mean of the rows' weights."""
    p = recipe.preference
    if p.reference == "base" and recipe.model.from_run is not None:
        return []  # the SFT policy against the base: a gap is what was asked for
    labels = inputs["label"].float()
    weights = labels * p.desirable_weight + (1 - labels) * p.undesirable_weight
    expected = 0.5 * float(weights.mean())
    bound = 0.25 * p.beta * LOGP_TOLERANCE * max(p.desirable_weight, p.undesirable_weight) + 1e-6
    if abs(values["loss"] - expected) > bound:
        return [
            f"KTO loss {values['loss']:.6f} is not {expected:.6f} (half the weighted rows), so the"
            " reference is not the starting policy"
        ]
    return []


def _unreferenced_problems(values: dict[str, Any], recipe: Recipe, inputs: dict[str, Any]) -> list[str]:
    """ORPO and SimPO: no starting value, but chosen and rejected must be told apart."""
    if values.get("logps/chosen") == values.get("logps/rejected"):
        return ["chosen and rejected answers score the same log-probability: the pairs are not compared"]
    return []


def _dpo_problems(values: dict[str, Any], recipe: Recipe, inputs: dict[str, Any]) -> list[str]:
    p = recipe.preference
    problems = []
    if values["_pairs_equal"]:
        problems.append(
            f"{values['_pairs_equal']} pairs score the same log-probability for chosen and rejected:"
            " the answers are not what the model sees"
        )
    if p.reference == "base" and recipe.model.from_run is not None:
        return problems  # the SFT policy against the base: a gap is what was asked for
    gap = values["max_abs_policy_minus_reference_logp"]
    if gap > LOGP_TOLERANCE:
        problems.append(
            f"policy and reference log-probabilities differ by up to {gap:.4g} nats (tolerance"
            f" {LOGP_TOLERANCE:g}): the reference is not the starting policy"
        )
        return problems
    if all(kind in DPO_START for kind in p.loss_type):
        weights = p.loss_weights or [1.0] * len(p.loss_type)
        expected = sum(w * DPO_START[kind](p.beta) for kind, w in zip(p.loss_type, weights))
        bound = p.beta * LOGP_TOLERANCE * sum(abs(w) for w in weights) + 1e-6  # |d loss / d log-ratio| <= beta
        if abs(values["loss"] - expected) > bound:
            problems.append(f"DPO loss {values['loss']:.6f} is not the starting value {expected:.6f}")
    if abs(values.get("rewards/margins", 0.0)) > 2 * p.beta * LOGP_TOLERANCE:
        problems.append(
            f"reward margin {values['rewards/margins']:.4g} is not 0 with the reference equal to the policy"
        )
    if values.get("rewards/accuracies", 0.0) != 0.0:
        problems.append(f"reward accuracy {values['rewards/accuracies']:.4g} is not 0 with equal rewards")
    return problems


def _line(values: dict[str, Any], recipe: Recipe, problems: list[str]) -> str:
    shown = [
        "loss",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "kl",
        "max_abs_policy_minus_reference_logp",
    ]
    parts = [f"{k} {values[k]:.6g}" for k in shown if k in values]
    if getattr(recipe.preference, "loss_type", None) == ["sigmoid"]:
        parts[0] += f" (ln 2 = {math.log(2):.6f})"
    verdict = "FAILED" if problems else "ok"
    return f"step 0    {recipe.preference.method} on {values['rows']} rows: {', '.join(parts)}: {verdict}"


@dataclass(frozen=True)
class GateRule:
    """What the gate reads and checks for one method (preference/methods.py names the methods)."""

    rows: Callable[[dict[str, Any]], int]  # pairs (or rows) in the first batch
    problems: Callable[[dict[str, Any], Recipe, dict[str, Any]], list[str]]
    per_row: Callable[[Any, Any, dict[str, Any]], dict[str, Any]] | None = None  # policy vs reference, row by row


RULES = {
    # DPO's batch holds the chosen answers, then the rejected ones: two rows a pair.
    "dpo": GateRule(lambda inputs: inputs["completion_mask"].shape[0] // 2, _dpo_problems, _dpo_rows),
    "kto": GateRule(_rows, _kto_problems),
    "orpo": GateRule(_rows, _unreferenced_problems),
    "simpo": GateRule(_rows, _unreferenced_problems),
}
