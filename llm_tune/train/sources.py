"""Validation read from a list of sources (data.validation as a list, or carved from a mixture): each source's loss
as eval_NAME_loss beside eval_loss.

Each source is evaluated on its own (its rows batched together), once: eval_loss is then the mean over every row
of its source's loss, as the whole set's loss is the mean over rows of their batch's loss. No row is evaluated
twice, so a mixture costs no more evaluation time than one file of the same rows."""

from __future__ import annotations

from typing import Any

from llm_tune.data.mixture import SOURCE


class SourceEvaluation:
    """A trainer mixin: the evaluation loop over the validation set, source by source (`validation_sources`: the
    names by SOURCE index). Other evaluation sets, and trainers that compute metrics from predictions, are
    evaluated as transformers does."""

    def __init__(self, *args: Any, validation_sources: list[str] | None = None, **kwargs: Any) -> None:
        self.validation_sources = validation_sources
        super().__init__(*args, **kwargs)

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        from transformers.trainer_utils import EvalLoopOutput

        whole = self.eval_dataset  # type: ignore[attr-defined]
        names = self.validation_sources
        by_source = (
            names is not None
            and self.compute_metrics is None  # type: ignore[attr-defined]
            and len(dataloader.dataset) == len(whole)
            and SOURCE in whole.column_names
        )
        if not by_source:
            return super().evaluation_loop(  # type: ignore[misc]
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        assert names is not None
        source = whole[SOURCE]
        metrics: dict[str, float] = {}
        total = rows = 0.0
        for index, name in enumerate(names):
            part = whole.select([i for i, s in enumerate(source) if s == index])
            if len(part) == 0:
                continue
            loader = self.get_eval_dataloader(part)  # type: ignore[attr-defined]
            result = super().evaluation_loop(  # type: ignore[misc]
                loader, f"{description} of {name}", True, ignore_keys, f"{metric_key_prefix}_{name}"
            )
            loss = result.metrics[f"{metric_key_prefix}_{name}_loss"]
            metrics[f"{metric_key_prefix}_{name}_loss"] = loss
            total, rows = total + loss * result.num_samples, rows + result.num_samples
        metrics = {f"{metric_key_prefix}_loss": total / rows, **metrics}
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=int(rows))
