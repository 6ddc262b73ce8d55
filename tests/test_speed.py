"""The fast path computes what the plain path computes: the label-only loss equals plain padded float32
cross-entropy and TRL's own SFT loss on the same batch (loss and gradients, 1e-5), for every format; bfloat16
autocast stays within a stated tolerance; and a run trains with the settings its resolved recipe states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import base_recipe, run_cli, write_recipe
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder

FORMATS = {
    "alpaca": ("alpaca.jsonl", {}),
    "chat": ("chat.jsonl", {}),
    "completion": ("text.jsonl", {}),
    "classification": ("reviews.jsonl", {"task": "classification", "classification": {"head": "generate"}}),
}
BF16_LOSS_RTOL = 2e-2  # bfloat16 keeps 8 bits of mantissa: the loss of a tiny model moves by about 1%
BF16_GRAD_RTOL = 5e-2  # and each gradient by a few percent of its norm


def _trainer(tiny_model: Path, data_dir: Path, tmp_path: Path, fmt: str, **extra):
    from llm_tune.data.formats import load_splits
    from llm_tune.model.loading import load_model
    from llm_tune.model.strategies import apply_strategy
    from llm_tune.pipeline import training_tokenizer
    from llm_tune.train.trainer import build_trainer

    file, sections = FORMATS[fmt]
    raw = base_recipe(tiny_model, data_dir, tmp_path / "run", **sections, **extra)
    raw["data"].update(train=str(data_dir / file), format=fmt)
    recipe = Recipe.model_validate(raw)
    tokenizer, _ = training_tokenizer(recipe)
    splits = load_splits(recipe.data, None, tokenizer)
    torch.manual_seed(0)
    model = load_model(recipe.model, tokenizer)
    model = apply_strategy(model, recipe.strategy, classifier=False, gradient_checkpointing=False)
    return build_trainer(recipe, model, tokenizer, splits, RunFolder(tmp_path / "run"))


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

    trainer = _trainer(tiny_model, data_dir, tmp_path, fmt)
    assert type(trainer).__name__ == "LabelOnlySFTTrainer"  # a CPU run takes the label-only loss
    model = trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    fast, fast_grads = _loss_and_grads(model, lambda: trainer.compute_loss(model, dict(batch)))
    plain, plain_grads = _loss_and_grads(model, lambda: _plain_loss(model, batch))
    trl, trl_grads = _loss_and_grads(model, lambda: SFTTrainer.compute_loss(trainer, model, dict(batch)))
    assert torch.allclose(fast, plain, atol=1e-5) and torch.allclose(fast, trl, atol=1e-5), (fast, plain, trl)
    for name, grad in fast_grads.items():
        assert torch.allclose(grad, plain_grads[name], atol=1e-5), name
        assert torch.allclose(grad, trl_grads[name], atol=1e-5), name


def test_bf16_autocast_stays_within_its_tolerance(tiny_model, data_dir, tmp_path):
    trainer = _trainer(tiny_model, data_dir, tmp_path, "alpaca")
    model = trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    exact, exact_grads = _loss_and_grads(model, lambda: trainer.compute_loss(model, dict(batch)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, fast_grads = _loss_and_grads(model, lambda: trainer.compute_loss(model, dict(batch)))
    assert abs(fast - exact) <= BF16_LOSS_RTOL * exact
    for name, grad in fast_grads.items():  # (LoRA A's gradient is 0 at the start, as B is)
        exact_grad = exact_grads[name]
        assert (grad - exact_grad).norm() <= BF16_GRAD_RTOL * exact_grad.norm() + 1e-6, name


def test_a_run_trains_with_the_settings_its_recipe_states(tiny_model, data_dir, tmp_path):
    """gradient_checkpointing: false stays false (TRL's config defaults it to true), and the rest likewise."""
    for checkpointing in (False, True):
        out = tmp_path / f"run-{checkpointing}"
        recipe = base_recipe(tiny_model, data_dir, out, training={"max_steps": 2, "save_steps": 2,
                                                                  "gradient_checkpointing": checkpointing})
        run_cli(write_recipe(tmp_path / "r.yaml", recipe))
        args = torch.load(out / "checkpoints" / "checkpoint-2" / "training_args.bin", weights_only=False)
        assert args.gradient_checkpointing is checkpointing
        assert args.bf16 is False  # model.dtype: float32 is exact: no autocast
        assert args.train_sampling_strategy == "group_by_length"
