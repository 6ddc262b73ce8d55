"""The preference trainers: TRL's, saving only the trained adapter. One class per method, named by
preference/methods.py (SimPO is TRL's CPOTrainer with loss_type simpo and cpo_alpha 0)."""

from __future__ import annotations

import os
import warnings
from typing import Any

from trl import DPOTrainer, KTOTrainer

with warnings.catch_warnings():  # trl.experimental warns on import that its API may change
    warnings.simplefilter("ignore")
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer


class TrainedAdapterOnly:
    """Saves (checkpoints and the run's weights) hold the trained `default` adapter only: TRL's frozen `ref` copy
    is rebuilt from the starting adapter whenever the trainer is made, and an adapter folder with a second adapter
    in it is not what exports and `from_pretrained` expect."""

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if "ref" not in getattr(model, "peft_config", {}):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir, selected_adapters=["default"])
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        return None


class DpoTrainer(TrainedAdapterOnly, DPOTrainer):
    """TRL's DPOTrainer."""


class KtoTrainer(TrainedAdapterOnly, KTOTrainer):
    """TRL's KTOTrainer."""


class OrpoTrainer(TrainedAdapterOnly, ORPOTrainer):
    """TRL's experimental ORPOTrainer."""


class SimpoTrainer(TrainedAdapterOnly, CPOTrainer):
    """TRL's experimental CPOTrainer, configured for SimPO."""
