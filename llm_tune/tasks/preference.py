"""Preference tuning (DPO, KTO, ORPO, SimPO: preference/methods.py) on TRL's trainers, from the base or a finished
run (model.from_run), checked at step 0 by the gate (preference/gate.py)."""

from __future__ import annotations

from typing import Any

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder
from llm_tune.tasks.base import Prepared, Task


class PreferenceTask(Task):
    kind = "preference"
    doctor_measures = True  # two answers a row and a reference: measured, not modelled

    @property
    def method(self) -> Any:
        from llm_tune.recipe.methods import method_of

        return method_of(self.recipe)

    def describe(self) -> str:
        return f"preference: {self.method.title}"

    def resolved(self) -> Recipe:
        from llm_tune.preference.start import from_run_problems, resolved_start

        if problems := from_run_problems(self.recipe):  # model.from_run: checked before any weights load
            raise UserError(*problems)
        recipe, self.start_notes = resolved_start(self.recipe)
        return recipe

    def data(self, recipe: Recipe, tokenizer: Any) -> tuple[Any, Recipe]:
        from llm_tune.data.preference import load_preference_splits

        splits = load_preference_splits(recipe.data, tokenizer, recipe.preference.method, recipe.training.seed)
        splits.notes[:0] = getattr(self, "start_notes", [])
        return splits, recipe

    def model(self, prepared: Prepared) -> tuple[Any, tuple[int, int]]:
        from llm_tune.model.strategies import parameter_counts
        from llm_tune.preference.start import starting_model

        model = starting_model(prepared.recipe, prepared.tokenizer)
        return model, parameter_counts(model)

    def trainer(self, prepared: Prepared, model: Any, args: Any, out: RunFolder) -> Any:
        from llm_tune.preference.trainer import build_preference_trainer

        return build_preference_trainer(prepared.recipe, model, prepared.tokenizer, prepared.splits, out)

    def before_training(self, trainer: Any, prepared: Prepared) -> dict[str, Any] | None:
        from llm_tune.preference.gate import check_step_zero

        return check_step_zero(trainer, prepared.recipe)
