"""What every kind of run does, as one interface: the pipeline (pipeline.py) calls these steps in order and never
asks which kind of run it drives.

    prepare -> arguments -> model -> trainer -> before_training -> (train) -> after_training

`prepare` returns a frozen `Prepared`: the tokenizer, the data, and the recipe as resolved for this run (a label set
discovered, balanced class weights counted, a regression scale measured, the run a preference run starts from).
The user's recipe object is never changed; what a run learns after training (thresholds, a temperature) comes back
as `Learned` and is written into the saved recipe once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from llm_tune.errors import UserError
from llm_tune.recipe.schema import Recipe
from llm_tune.run_folder import RunFolder


@dataclass(frozen=True)
class Prepared:
    """A run's inputs, ready to train: the resolved recipe, its tokenizer (with the training chat template) and
    the stock template the exports carry, and the splits."""

    recipe: Recipe
    tokenizer: Any
    stock_template: Any
    splits: Any


@dataclass(frozen=True)
class Learned:
    """Values fitted after training that the saved recipe records: the classification section's keys, and the
    metrics they add (eval_* of the rows they were not fitted on)."""

    classification: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def applied(self, recipe: Recipe) -> Recipe:
        if not self.classification:
            return recipe
        return recipe.model_copy(
            update={"classification": recipe.classification.model_copy(update=self.classification)}
        )


class Task(ABC):
    """The base of the three tasks (tasks/sft.py, tasks/classifier.py, tasks/preference.py)."""

    kind: ClassVar[str]  # the key table's name for it (tasks/keys.py)
    writes_samples: ClassVar[bool] = True  # a text generator: the run ends with a few greedy samples
    doctor_measures: ClassVar[bool] = False  # doctor measures its memory in real steps rather than modelling it

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def describe(self) -> str:
        """What the run is, in words (the report, the console)."""
        return self.kind

    def resolved(self) -> Recipe:
        """The recipe as this run really starts, known before any weights or rows load (a preference run's
        model.from_run); the resume check compares it with the checkpointed run's."""
        return self.recipe

    def prepare(self) -> Prepared:
        recipe = self.resolved()
        tokenizer, stock = training_tokenizer(recipe)
        splits, recipe = self.data(recipe, tokenizer)
        return Prepared(recipe, tokenizer, stock, splits)

    @abstractmethod
    def data(self, recipe: Recipe, tokenizer: Any) -> tuple[Any, Recipe]:
        """The splits, and the recipe with what the training rows resolve."""

    def arguments(self, prepared: Prepared, out: RunFolder) -> Any:
        """The trainer's arguments object, made before the model (train/trainer.py: training_arguments); None when
        the trainer makes its own."""
        return None

    @abstractmethod
    def model(self, prepared: Prepared) -> tuple[Any, tuple[int, int]]:
        """The model to train and its (trainable, total) parameter counts."""

    @abstractmethod
    def trainer(self, prepared: Prepared, model: Any, args: Any, out: RunFolder) -> Any:
        """The configured trainer (tokenizes the rows it trains on)."""

    def before_training(self, trainer: Any, prepared: Prepared) -> dict[str, Any] | None:
        """The step-0 values of a run that starts at step 0 (a gate may refuse the run); None: no step-0 check."""
        return None

    def after_training(self, trainer: Any, prepared: Prepared, out: RunFolder) -> Learned:
        """The end-of-run evaluation (on every rank: a sharded model's forward passes are collectives)."""
        return Learned(metrics=validation_scores(trainer, prepared))


# End-of-run evaluation values metrics.json keeps (TRL's names for preference runs).
EVAL_METRICS = (
    "eval_loss",
    "eval_accuracy",
    "eval_macro_f1",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
)


def validation_scores(trainer: Any, prepared: Prepared) -> dict[str, Any]:
    """The final model's validation scores (eval_loss, and each validation source's), or {} without validation.
    Those of an evaluation the last step already ran (eval_steps dividing max_steps) are reused, unless the best
    checkpoint was loaded back: that is another model."""
    if prepared.splits.validation is None:
        return {}
    state = trainer.state
    last = next((entry for entry in reversed(state.log_history) if "eval_loss" in entry), {})
    reuse = last.get("step") == state.global_step and not trainer.args.load_best_model_at_end
    scores = last if reuse else trainer.evaluate()
    by_source = {f"eval_{name}_loss" for name in prepared.splits.source_names.get("validation", [])}
    return {k: v for k, v in scores.items() if k in EVAL_METRICS or k in by_source}


def training_tokenizer(recipe: Recipe) -> tuple[Any, Any]:
    """The tokenizer to train with (a chat template with generation markers for assistant-only loss), and
    its stock chat template."""
    from llm_tune.data.chat_templates import training_chat_template
    from llm_tune.model.loading import load_tokenizer

    tokenizer = load_tokenizer(recipe.model)
    stock_template = tokenizer.chat_template
    if recipe.data.assistant_only:
        tokenizer.chat_template = training_chat_template(tokenizer, recipe.data.chat_template)
        if tokenizer.chat_template is None:
            raise UserError(
                "data.chat_template: the model's chat template has no {% generation %} markers and none is known;"
                " give a .jinja file with them, or set data.train_on_prompt: true"
            )
    return tokenizer, stock_template
