"""The fast path computes what the plain path computes: the label-only loss equals plain padded float32
cross-entropy and TRL's own SFT loss on the same batch (loss and gradients, 1e-5), for every format, at a trained
state; bfloat16 autocast blurs less than a change of batch does (on SmolLM2); and a run trains with the settings its resolved recipe states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import SMOLLM2, base_recipe, run_cli, write_recipe
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder

FORMATS = {
    "alpaca": ("alpaca.jsonl", {}),
    "chat": ("chat.jsonl", {}),
    "completion": ("text.jsonl", {}),
    "classification": ("reviews.jsonl", {"task": "classification", "classification": {"head": "generate"}}),
}
# bfloat16 autocast must move the loss and the gradients by less than this share of the signal it would blur: the
# difference between two batches of different rows (measured on SmolLM2, whose loss depends on its input).
BF16_SHARE_OF_SIGNAL = 0.25


def _trainer(tiny_model: Path, data_dir: Path, tmp_path: Path, fmt: str, trained_steps: int = 0, **extra):
    """The run's trainer on `fmt`'s rows; with trained_steps, after that many optimizer steps (LoRA B no longer 0,
    so every lora_A gradient is too)."""
    from llm_tune.data.formats import load_splits
    from llm_tune.model.loading import load_model
    from llm_tune.model.strategies import apply_strategy
    from llm_tune.tasks.base import training_tokenizer
    from llm_tune.train.trainer import build_trainer

    file, sections = FORMATS[fmt]
    raw = base_recipe(tiny_model, data_dir, tmp_path / "run", **sections, **extra)
    raw["data"].update(train=str(data_dir / file), format=fmt)
    if trained_steps:
        raw["training"].update(max_steps=trained_steps, learning_rate=1e-2, save_steps=10_000, logging_steps=1000)
    recipe = Recipe.model_validate(raw)
    tokenizer, _ = training_tokenizer(recipe)
    splits = load_splits(recipe.data, None, tokenizer)
    torch.manual_seed(0)
    model = load_model(recipe.model, tokenizer)
    model = apply_strategy(model, recipe.strategy, classifier=False, gradient_checkpointing=False)
    trainer = build_trainer(recipe, model, tokenizer, splits, RunFolder(tmp_path / "run"))
    if trained_steps:
        trainer.train()
        lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
        assert lora_b and all(p.abs().max() > 0 for p in lora_b)  # a trained state, not LoRA's initial one
    return trainer


def _batches(trainer, count: int = 2) -> list:
    loader = iter(trainer.get_train_dataloader())
    return [next(loader) for _ in range(count)]


def _plain_loss(model, batch):
    """transformers' own causal-LM loss: full logits at every position, shifted, mean over the labels."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits.float()
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100)


def _loss_and_grads(model, loss_fn):
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_label_only_loss_equals_plain_and_trl_cross_entropy(tiny_model, data_dir, tmp_path, fmt):
    from trl import SFTTrainer

    trainer = _trainer(tiny_model, data_dir, tmp_path, fmt, trained_steps=4)
    assert trainer.label_only  # a CPU run takes the label-only loss
    model = trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    fast, fast_grads = _loss_and_grads(model, lambda: trainer.compute_loss(model, dict(batch)))
    plain, plain_grads = _loss_and_grads(model, lambda: _plain_loss(model, batch))
    trl, trl_grads = _loss_and_grads(model, lambda: SFTTrainer.compute_loss(trainer, model, dict(batch)))
    assert torch.allclose(fast, plain, atol=1e-5) and torch.allclose(fast, trl, atol=1e-5), (fast, plain, trl)
    assert all(fast_grads[n].abs().max() > 1e-6 for n in fast_grads if "lora_A" in n)  # no comparison of zeros
    for name, grad in fast_grads.items():
        scale = grad.abs().max().item()  # 1e-5 of the largest entry: float32 summation order, nothing more
        assert torch.allclose(grad, plain_grads[name], atol=1e-5 * scale, rtol=0), name
        assert torch.allclose(grad, trl_grads[name], atol=1e-5 * scale, rtol=0), name


@pytest.mark.skipif(not (SMOLLM2 / "config.json").is_file(), reason="SmolLM2 is not in models/ (make model)")
def test_bf16_autocast_blurs_less_than_a_change_of_batch(data_dir, tmp_path):
    """On SmolLM2 after two LoRA steps: bfloat16 autocast moves the loss, and the gradient, by less than a quarter
    of what a different batch of rows moves them (the signal training follows)."""
    trainer = _trainer(SMOLLM2, data_dir, tmp_path, "alpaca", trained_steps=2, strategy={"kind": "lora", "r": 4})
    model = trainer.model.train()
    first, second = _batches(trainer)
    exact, exact_grads = _loss_and_grads(model, lambda: trainer.compute_loss(model, dict(first)))
    other, other_grads = _loss_and_grads(model, lambda: trainer.compute_loss(model, dict(second)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, fast_grads = _loss_and_grads(model, lambda: trainer.compute_loss(model, dict(first)))
    flat = lambda grads: torch.cat([g.flatten() for g in grads.values()])  # noqa: E731
    loss_signal, grad_signal = abs(other - exact).item(), (flat(other_grads) - flat(exact_grads)).norm().item()
    loss_blur, grad_blur = abs(fast - exact).item(), (flat(fast_grads) - flat(exact_grads)).norm().item()
    print(f"\nloss: bf16 moves it {loss_blur:.2e}, another batch {loss_signal:.2e}; gradient: {grad_blur:.2e} vs"
          f" {grad_signal:.2e}")  # fmt: skip
    assert loss_signal > 1e-2 and grad_signal > 0  # the model's loss depends on its input
    assert loss_blur < BF16_SHARE_OF_SIGNAL * loss_signal
    assert grad_blur < BF16_SHARE_OF_SIGNAL * grad_signal


def test_a_run_trains_with_the_settings_its_recipe_states(tiny_model, data_dir, tmp_path):
    """gradient_checkpointing: false stays false (TRL's config defaults it to true), and the rest likewise."""
    for checkpointing in (False, True):
        out = tmp_path / f"run-{checkpointing}"
        recipe = base_recipe(
            tiny_model,
            data_dir,
            out,
            training={"max_steps": 2, "save_steps": 2, "gradient_checkpointing": checkpointing},
        )
        run_cli(write_recipe(tmp_path / "r.yaml", recipe))
        args = torch.load(out / "checkpoints" / "checkpoint-2" / "training_args.bin", weights_only=False)
        assert args.gradient_checkpointing is checkpointing
        assert args.bf16 is False  # model.dtype: float32 is exact: no autocast
        assert args.train_sampling_strategy == "group_by_length"


def test_preference_label_only_head_equals_trls_fused_head(tiny_model):
    """DPO's and KTO's head on a CPU (llm_tune/preference/head.py) against TRL's fused head on the same batch: a
    LoRA adapter with non-zero B (so its gradients are not trivially zero), left padding, prompts masked. Log-probs,
    their gradients, and the metric fields agree to float32 rounding."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from llm_tune.preference.head import FIELDS, _patch

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    add_fused_lm_head(base, outputs=FIELDS)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    ids = torch.randint(3, base.config.vocab_size, (4, 24))
    attention = torch.ones_like(ids)
    attention[0, :5] = attention[2, :9] = 0  # left padding
    labels = ids.masked_fill(attention == 0, -100)
    labels[:, :14] = -100  # the prompt

    def run() -> tuple[dict, list]:
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
        (out.log_probs * torch.linspace(0.5, 1.5, out.log_probs.shape[1])).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        return {k: getattr(out, k).detach() for k in FIELDS}, grads

    trl_out, trl_grads = run()
    _patch(base)
    ours, our_grads = run()
    assert (ours["log_probs"] != 0).sum() == (labels[:, 1:] != -100).sum() > 0
    for key in ("log_probs", "entropy", "mean_logits", "log_sum_sq_probs"):
        scale = trl_out[key].abs().max()
        assert (ours[key] - trl_out[key]).abs().max() <= 1e-5 * scale, key
    assert torch.equal(ours["is_top1"], trl_out["is_top1"])
    norm = torch.sqrt(sum((g**2).sum() for g in trl_grads))
    assert norm > 0 and all((a - b).abs().max() <= 1e-5 * norm for a, b in zip(our_grads, trl_grads))
