"""The recipe's `preference:` section, one typed section per method (TRL's names): keys of another method are errors,
as strategy keys are."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from llm_tune.recipe.section import Section

DpoLoss = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]
BETA = (
    "TRL's beta: dpo and kto, how strongly the policy is held to the reference (0.1); orpo, the weight of the"
    " odds-ratio term (lambda, 0.1); simpo, the reward scale (2.0)"
)


class DpoConfig(Section):
    """Direct Preference Optimization (TRL DPOTrainer / DPOConfig names)."""

    method: Literal["dpo"] = Field("dpo", description="dpo: pairs scored against a frozen reference policy")
    beta: float = Field(0.1, gt=0, description=BETA)
    loss_type: list[DpoLoss] = Field(
        ["sigmoid"], min_length=1, description="TRL's DPO losses, summed (sigmoid is the DPO paper's)"
    )
    loss_weights: list[float] | None = Field(None, description="a weight per loss_type entry; null: 1 each")
    reference: Literal["start", "base"] = Field(
        "start",
        description="start: the policy as the run starts (the SFT run's with model.from_run, else the base); base:"
        " the base model without any adapter",
    )
    precompute_ref_log_probs: bool = Field(
        False, description="score the reference once before training (less memory and time per step)"
    )

    @model_validator(mode="after")
    def _weights_match(self) -> DpoConfig:
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"preference.loss_weights: {len(self.loss_weights)} weights for {len(self.loss_type)} loss_type"
                " entries; give one weight per loss"
            )
        return self


class KtoConfig(Section):
    """Kahneman-Tversky Optimization on unpaired rows (TRL KTOTrainer / KTOConfig names)."""

    method: Literal["kto"] = Field("kto", description="kto: unpaired good/bad completions (pairs are unpaired)")
    beta: float = Field(0.1, gt=0, description=BETA)
    desirable_weight: float = Field(1.0, gt=0, description="weight of the desirable (label true) rows' loss")
    undesirable_weight: float = Field(1.0, gt=0, description="weight of the undesirable (label false) rows' loss")
    reference: Literal["start", "base"] = Field(
        "start",
        description="start: the policy as the run starts (the SFT run's with model.from_run, else the base); base:"
        " the base model without any adapter",
    )
    precompute_ref_log_probs: bool = Field(
        False, description="score the reference once before training (less memory and time per step)"
    )


class OrpoConfig(Section):
    """Odds Ratio Preference Optimization: SFT loss plus an odds-ratio term, no reference (TRL ORPOTrainer)."""

    method: Literal["orpo"] = Field("orpo", description="orpo: no reference model; NLL plus odds-ratio penalty")
    beta: float = Field(0.1, gt=0, description=BETA)


class SimpoConfig(Section):
    """SimPO: length-normalized pairwise loss with a margin, no reference (TRL CPOTrainer, loss_type simpo,
    cpo_alpha 0)."""

    method: Literal["simpo"] = Field("simpo", description="simpo: no reference model; average log-prob margin")
    beta: float = Field(2.0, gt=0, description=BETA)
    simpo_gamma: float = Field(0.5, ge=0, description="the target reward margin gamma (TRL's simpo_gamma)")


PREFERENCE_METHODS: dict[str, type[Section]] = {
    "dpo": DpoConfig,
    "kto": KtoConfig,
    "orpo": OrpoConfig,
    "simpo": SimpoConfig,
}


def _preference_method(value: Any) -> str:
    method = value.get("method", "dpo") if isinstance(value, dict) else getattr(value, "method", "dpo")
    return method if method in PREFERENCE_METHODS else "unknown"


Preference = Annotated[
    Annotated[DpoConfig, Tag("dpo")]
    | Annotated[KtoConfig, Tag("kto")]
    | Annotated[OrpoConfig, Tag("orpo")]
    | Annotated[SimpoConfig, Tag("simpo")],
    Discriminator(_preference_method),
]
