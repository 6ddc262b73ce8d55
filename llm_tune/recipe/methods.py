"""The preference methods, one record each (torch-free): TRL's config and trainer, the rows they train on, whether a
frozen reference scores them, how the step-0 gate reads the first batch. The trainer (preference/trainer.py), the
gate (preference/gate.py), the card and the doctor read this table; nothing else asks which method a run uses."""

from __future__ import annotations

from dataclasses import dataclass

from llm_tune.recipe.schema import Recipe


@dataclass(frozen=True)
class Method:
    name: str
    config: str  # TRL's config class, "module:Class"
    trainer: str  # the trainer class (TRL's, saving the trained adapter only), "module:Class"
    paired: bool  # trains on (prompt, chosen, rejected); False: unpaired (prompt, completion, label) rows
    reference: bool  # a frozen reference policy scores the answers (the step-0 gate compares the two)
    logged_loss: bool  # the gate reads the trainer's compute_loss and what it logs; else get_batch_loss_metrics
    counts_tokens: bool  # its batches carry input_ids for the Trainer's token count (tokens/s)
    sequential: bool  # TRL needs the rows in a fixed order (KTO's KL term pairs neighbouring rows)
    title: str  # what the card and the report call it

    @property
    def rows_per_pair(self) -> int:
        """Training rows one preference pair becomes."""
        return 1 if self.paired else 2


METHODS: dict[str, Method] = {
    "dpo": Method(
        "dpo", "trl:DPOConfig", "llm_tune.preference.trainers:DpoTrainer", paired=True, reference=True, logged_loss=True,
        counts_tokens=True, sequential=False, title="DPO (Direct Preference Optimization)",
    ),
    "kto": Method(
        "kto", "trl:KTOConfig", "llm_tune.preference.trainers:KtoTrainer", paired=False, reference=True, logged_loss=True,
        counts_tokens=False, sequential=True, title="KTO (Kahneman-Tversky Optimization)",
    ),
    "orpo": Method(
        "orpo", "trl.experimental.orpo:ORPOConfig", "llm_tune.preference.trainers:OrpoTrainer", paired=True,
        reference=False, logged_loss=False, counts_tokens=False, sequential=False,
        title="ORPO (Odds Ratio Preference Optimization)",
    ),
    "simpo": Method(
        "simpo", "trl.experimental.cpo:CPOConfig", "llm_tune.preference.trainers:SimpoTrainer", paired=True,
        reference=False, logged_loss=False, counts_tokens=False, sequential=False,
        title="SimPO (Simple Preference Optimization)",
    ),
}  # fmt: skip


def method_of(recipe: Recipe) -> Method:
    return METHODS[recipe.preference.method]
