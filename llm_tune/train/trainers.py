"""The two trainers llm_tune trains SFT and classifier runs with. Each mixin takes its state through `__init__`
and is inert without it, so one class serves every recipe:

- ExactOrder (train/order.py): the training order a pure function of (seed, epoch, global batch), a mixture's
  epochs drawn by their shares;
- SourceEvaluation (train/sources.py): a validation mixture's losses source by source;
- ClassifierEvaluation (train/monitor.py): a classifier's validation scored as `eval` scores it;
- GradualUnfreezing before LayerwiseRates (train/layers.py): it widens what that one groups;
- LabelOnlyLoss (train/loss.py): the LM head and cross-entropy at the label positions only (a CPU, class weights).
"""

from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer

from llm_tune.train.layers import GradualUnfreezing, LayerwiseRates
from llm_tune.train.loss import LabelOnlyLoss
from llm_tune.train.monitor import ClassifierEvaluation
from llm_tune.train.order import ExactOrder
from llm_tune.train.sources import SourceEvaluation


class ClassifierTrainer(ExactOrder, SourceEvaluation, ClassifierEvaluation, GradualUnfreezing, LayerwiseRates, Trainer):
    """transformers' Trainer over a sequence-classification head."""


class LanguageModelTrainer(
    ExactOrder, SourceEvaluation, ClassifierEvaluation, GradualUnfreezing, LayerwiseRates, LabelOnlyLoss, SFTTrainer
):
    """TRL's SFTTrainer over a causal LM: SFT, and the generate head's classifier."""
