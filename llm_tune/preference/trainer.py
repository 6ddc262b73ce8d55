"""From a preference recipe to TRL's trainer: DPOTrainer, KTOTrainer, or the experimental ORPOTrainer and
CPOTrainer (SimPO is CPO with loss_type simpo and cpo_alpha 0). The shared TrainingArguments come from
train/trainer.py, so every knob the recipe sets reaches the trainer; the method's own keys are added here."""

from __future__ import annotations

import os
import warnings
from typing import Any

from llm_tune.console import say
from llm_tune.recipe.methods import method_of
from llm_tune.recipe.preference import DpoConfig, KtoConfig, OrpoConfig, SimpoConfig
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder


def preference_config(recipe: Recipe, arguments: dict[str, Any]) -> Any:
    """TRL's config for the method: the shared arguments, the data's max_length and the method's keys."""
    p = recipe.preference
    common = dict(arguments, max_length=recipe.data.max_length, beta=p.beta)
    if method_of(recipe).sequential:
        # KTO's KL term pairs each row with its neighbours in a fixed-order batch: TRL requires sequential order
        # (the rows were shuffled once, seeded, when they were loaded).
        common["train_sampling_strategy"] = "sequential"
    if isinstance(p, DpoConfig):
        from trl import DPOConfig

        return DPOConfig(
            **common,
            loss_type=list(p.loss_type),
            loss_weights=p.loss_weights,
            precompute_ref_log_probs=p.precompute_ref_log_probs,
        )
    if isinstance(p, KtoConfig):
        from trl import KTOConfig

        return KTOConfig(
            **common,
            desirable_weight=p.desirable_weight,
            undesirable_weight=p.undesirable_weight,
            precompute_ref_log_probs=p.precompute_ref_log_probs,
        )
    with warnings.catch_warnings():  # trl.experimental warns on import that its API may change
        warnings.simplefilter("ignore")
        if isinstance(p, OrpoConfig):
            from trl.experimental.orpo import ORPOConfig

            return ORPOConfig(**common)
        from trl.experimental.cpo import CPOConfig

    assert isinstance(p, SimpoConfig)
    return CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=p.simpo_gamma)


def build_preference_trainer(
    recipe: Recipe, model: Any, tokenizer: Any, splits: Any, run: RunFolder, ordered: bool = False
) -> Any:
    """TRL's trainer for the recipe's method; `ordered` (doctor's measured steps): the rows in the order given."""
    from llm_tune.preference.head import use_label_only_heads
    from llm_tune.preference.start import base_reference
    from llm_tune.train.monitor import watch_callbacks
    from llm_tune.train.trainer import trainer_arguments

    method = method_of(recipe)
    arguments = trainer_arguments(recipe, run, splits.validation is not None)
    if ordered:
        arguments["train_sampling_strategy"] = "sequential"
    elif arguments["train_sampling_strategy"] == "group_by_length" and not method.sequential:
        # Preference rows keep prompt and answers in separate columns, which the length-grouped sampler cannot
        # measure: a plain seeded shuffle.
        arguments["train_sampling_strategy"] = "random"
        say("training.group_by_length: preference rows are shuffled plainly (seeded), not grouped by length")
    if not method.counts_tokens:
        arguments["include_num_input_tokens_seen"] = "no"  # these trainers' batches carry no input_ids to count
    if recipe.training.report_to == "tensorboard":
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.logs)
    trainer = import_class(method.trainer)(
        model=model,
        args=preference_config(recipe, arguments),
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=tokenizer,
    )
    base_reference(recipe, trainer)
    use_label_only_heads(trainer)  # DPO and KTO on a CPU: the head at the answer positions only
    for callback in watch_callbacks(recipe.training):
        trainer.add_callback(callback)
    return trainer


def import_class(path: str) -> type:
    """TRL's class at "module:Class" (trl.experimental warns on import that its API may change: said once here)."""
    import importlib
    import warnings

    module, name = path.split(":")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
