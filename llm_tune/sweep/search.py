"""Random search through Optuna: a study stored in OUTPUT_DIR/sweep-optuna.log (so a stopped sweep continues),
trials sampled from the space, and pruning of trials whose evaluations trail the median of the others at the same
step (transformers' evaluations are reported to the study as they happen)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.extras import require
from llm_tune.recipe.schema import TrainingConfig
from llm_tune.run_folder import RunFolder, read_json
from llm_tune.sweep.space import Dimension

STORAGE = "sweep-optuna.log"


def _optuna() -> Any:
    optuna = require("optuna", "--search random")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own lines
    return optuna


def run_study(
    space: list[Dimension],
    trials: int,
    seed: int,
    training: TrainingConfig,
    root: Path,
    objective: Callable[[dict[str, Any], int, list[Any]], RunFolder],
) -> list[tuple[int, dict[str, Any], str]]:
    """Run until the study holds `trials` finished (complete or pruned) trials; returns them (number, values, status)."""
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    root.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(root / STORAGE)))
    study = optuna.create_study(
        study_name="sweep", storage=storage, load_if_exists=True,
        direction="maximize" if training.greater_is_better else "minimize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )  # fmt: skip
    for stale in study.get_trials(states=(TrialState.RUNNING,)):  # a trial the last, stopped sweep left running
        study.tell(stale.number, state=TrialState.FAIL)
    done = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if done:
        say(f"sweep: {done} trials finished before; {max(trials - done, 0)} to go")
    # A new seed per resumption: the sampler would otherwise draw the finished trials' values again.
    study.sampler = optuna.samplers.RandomSampler(seed=seed + len(study.trials))
    metric = training.metric_for_best_model
    if training.eval_steps is None:
        say(
            "warning: sweep: trials are pruned on the evaluations during training, and training.eval_steps is not"
            " set: no trial can be pruned (set training.eval_steps to prune the trials that trail)"
        )

    def run(trial: Any) -> float:
        values = {d.key: d.suggest(trial) for d in space}
        watch = prune_callback(trial, metric)
        folder = objective(values, trial.number, [watch])
        value = trial_value(folder, metric)
        if watch.pruned:
            say(f"trial-{trial.number}: pruned at step {watch.pruned_at} ({metric} {watch.last:.4g})")
            raise optuna.TrialPruned()
        if value is None:
            raise UserError(f"trial-{trial.number}: the run recorded no {metric}")
        return value

    if trials > done:
        study.optimize(run, n_trials=trials - done, catch=())
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    return [(t.number, t.params, "pruned" if t.state == TrialState.PRUNED else "finished") for t in finished]


def trial_value(folder: RunFolder, metric: str) -> float | None:
    metrics = read_json(folder.metrics) if folder.metrics.is_file() else {}
    return metrics.get("best_metric") if metrics.get("best_metric") is not None else metrics.get(metric)


def prune_callback(trial: Any, metric: str) -> Any:
    """A TrainerCallback reporting each evaluation to the trial and stopping the run when Optuna prunes it."""
    from transformers import TrainerCallback

    class PruneOnEvaluate(TrainerCallback):
        pruned, pruned_at, last, ended = False, None, float("nan"), False

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.ended = True

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kw: Any):
            # Only intermediate evaluations: one at the last step or after training has nothing left to save, and
            # a trial that trained to the end is finished, never "pruned".
            if not metrics or metric not in metrics or self.ended or state.global_step >= state.max_steps:
                return
            self.last = metrics[metric]
            trial.report(self.last, state.global_step)
            if trial.should_prune():
                self.pruned, self.pruned_at = True, state.global_step
                control.should_training_stop = True

    return PruneOnEvaluate()
