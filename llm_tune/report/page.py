"""report.html: one run's page (RUN_DIR/report.html, plots also saved under RUN_DIR/report/), or several runs
overlaid on one page. Jinja2 templates with autoescaping; the plots are embedded as data: URIs, the CSS is
inline, and nothing on the page refers outside it, so it opens offline and can be mailed as one file."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from llm_tune import __version__
from llm_tune.report import plots
from llm_tune.report.history import RunData, read_run
from llm_tune.run_folder import write_bytes_atomic, write_text_atomic

TEMPLATES = Path(__file__).parent / "templates"
TEXT_SHOWN = 400  # characters of a prediction's text on the page
HEADLINE = (  # metrics.json keys shown up front, in this order
    ("eval_accuracy", "accuracy"),
    ("eval_micro_f1", "micro-F1"),
    ("eval_macro_f1", "macro-F1"),
    ("eval_subset_accuracy", "subset accuracy"),
    ("eval_pearson", "Pearson"),
    ("eval_spearman", "Spearman"),
    ("eval_ece_before", "ECE before calibration"),
    ("eval_ece", "ECE"),
    ("temperature", "temperature"),
    ("train_loss", "training loss"),
    ("eval_loss", "validation loss"),
    ("train_steps", "steps"),
    ("train_examples", "examples"),
    ("train_tokens", "tokens"),
    ("tokens_per_s", "tokens/s"),
    ("train_runtime_s", "training seconds"),
)


def write_run_report(run_dir: Path, out: Path | None = None) -> Path:
    """The run's plots into RUN_DIR/report/ and its page into RUN_DIR/report.html (or `out`); returns the page."""
    run = read_run(run_dir)
    figures = _run_figures(run)
    for name, (_, png) in figures.items():
        write_bytes_atomic(run.run.report_plots / f"{name}.png", png)
    html = _render(
        "run.html.jinja",
        title=f"llm_tune run report: {run.name}",
        run=run,
        summary=_summary(run),
        headline=_headline(run.metrics),
        plots=[(title, f"report/{name}.png", _data_uri(png)) for name, (title, png) in figures.items()],
        per_class=_per_class(run.evaluation),
        predictions=[_prediction(p) for p in run.predictions],
        metrics=[(key, _format(value)) for key, value in sorted(run.metrics.items())],
        environment=_environment_rows(run.environment),
        notes=_notes(run),
    )
    page = Path(out) if out else run.run.report_page
    write_text_atomic(page, html)
    return page


def write_comparison(run_dirs: list[Path], out: Path) -> Path:
    """Several runs on one page: their curves overlaid, their metrics side by side, their recipes' differences."""
    runs = [read_run(d) for d in run_dirs]
    _distinct_names(runs)
    figures = [("Loss", plots.loss_plot(runs)), ("Learning rate", plots.learning_rate_plot(runs))]
    keys = sorted({key for run in runs for key in run.metrics}, key=_headline_order)
    html = _render(
        "compare.html.jinja",
        title=f"llm_tune: {len(runs)} runs compared",
        runs=runs,
        summaries=[_summary(r) for r in runs],
        plots=[(title, None, _data_uri(png)) for title, png in figures if png is not None],
        metrics=[(key, [_format(r.metrics[key]) if key in r.metrics else "" for r in runs]) for key in keys],
        differences=_differences(runs),
    )
    write_text_atomic(Path(out), html)
    return Path(out)


def _distinct_names(runs: list[RunData]) -> None:
    """Runs are told apart by folder name; where two share one (runs/a/run, runs/b/run), by more of the path."""
    for depth in (2, 3, None):
        names = [r.name for r in runs]
        if len(set(names)) == len(names):
            return
        for run in runs:
            parts = run.run.root.resolve().parts
            run.label = "/".join(parts[-depth:]) if depth else str(run.run.root)


def _run_figures(run: RunData) -> dict[str, tuple[str, bytes]]:
    """{file stem: (title, PNG)} for the plots this run has data for."""
    figures = {
        "loss": ("Loss", plots.loss_plot([run])),
        "learning_rate": ("Learning rate", plots.learning_rate_plot([run])),
    }
    if run.rewards:
        figures["rewards"] = ("Rewards", plots.rewards_plot(run))
    if run.source_losses:
        figures["source_loss"] = ("Validation loss by source", plots.source_loss_plot(run))
    evaluation = run.evaluation or {}
    if "confusion_matrix" in evaluation:
        figures["confusion_matrix"] = ("Confusion matrix", plots.confusion_plot(evaluation))
    if "f1" in evaluation:  # single-label and multi_label runs
        figures["per_class_f1"] = ("Per-class F1", plots.f1_plot(evaluation))
    fit = run.run.root / "calibration.json"  # classification.calibrate: written by the pipeline after training
    if fit.is_file():
        from llm_tune.report.target_plots import reliability_plot

        figures["reliability"] = ("Reliability", reliability_plot(json.loads(fit.read_text(encoding="utf-8"))))
    if "pearson" in evaluation:  # regression
        from llm_tune.report.history import _jsonl
        from llm_tune.report.target_plots import scatter_plot

        predictions = _jsonl(run.run.eval / "predictions.jsonl")
        figures["prediction_vs_truth"] = ("Prediction vs truth", scatter_plot(predictions, evaluation))
    return {name: (title, png) for name, (title, png) in figures.items() if png is not None}


def _render(template: str, **context: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    made = time.strftime("%Y-%m-%d %H:%M")
    return env.get_template(template).render(made=made, version=__version__, **context)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _summary(run: RunData) -> dict[str, str]:
    recipe, metrics = run.recipe, run.metrics
    task = (run.environment or {}).get("run") or recipe.task  # the task's own description (older runs: the task key)
    trainable = metrics.get("trainable_params")
    total = metrics.get("total_params")
    return {
        "name": run.name,
        "path": str(run.run.root),
        "model": recipe.model.name_or_path,
        "strategy": recipe.strategy.kind,
        "task": task,
        "data": f"{recipe.data.train_label} ({recipe.data.format})"
        + (f", validation {recipe.data.validation_label}" if recipe.data.validation else ""),
        "trainable": f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)" if trainable and total else "",
    }


def _headline(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    return [(label, _format(metrics[key])) for key, label in HEADLINE if key in metrics]


def _headline_order(key: str) -> tuple[int, str]:
    order = [k for k, _ in HEADLINE]
    return (order.index(key) if key in order else len(order), key)


def _per_class(evaluation: dict[str, Any] | None) -> list[tuple[str, str, str, str, int]]:
    if evaluation is None or "precision" not in evaluation:  # regression: no classes
        return []
    e = evaluation
    return [
        (label, f"{p:.4f}", f"{r:.4f}", f"{f:.4f}", n)
        for label, p, r, f, n in zip(e["labels"], e["precision"], e["recall"], e["f1"], e["support"])
    ]


def _prediction(row: dict[str, Any]) -> dict[str, Any]:
    text = row["text"] if len(row["text"]) <= TEXT_SHOWN else row["text"][:TEXT_SHOWN] + "…"
    # A multi_label prediction is a list of labels: no one confidence (each label's probability is in the file).
    confidence = row.get("probabilities", {}).get(row["prediction"]) if isinstance(row["prediction"], str) else None
    return {
        "text": text,
        "label": row["label"],
        "prediction": row["prediction"],
        "confidence": f"{confidence:.3f}" if confidence is not None else "",
        "right": row["label"] == row["prediction"],
    }


def _environment_rows(environment: dict[str, Any] | None) -> list[tuple[str, str]]:
    if environment is None:
        return []
    rows = [(key, str(environment[key])) for key in ("device", "dtype", "processes", "platform") if key in environment]
    return rows + [(name, version) for name, version in environment.get("versions", {}).items()]


def _notes(run: RunData) -> list[str]:
    notes = []
    if run.state_from is None:
        notes.append("No trainer_state.json: the run logged no steps yet, so there are no curves.")
    elif run.state_from != run.run.trainer_state:
        notes.append(f"The run has not finished: the curves are the log of {run.state_from.parent.name}.")
    if (
        not run.eval_loss
        and run.final_eval_loss is None
        and run.recipe.data.validation is None
        and run.recipe.data.validation_fraction is None
    ):
        notes.append("No validation data (data.validation): there is no validation loss to plot.")
    if run.classification and run.evaluation is None:
        notes.append("No eval/metrics.json: run python -m llm_tune eval RUN_DIR --data FILE to score the classifier.")
    if not run.classification and not run.samples:
        notes.append("No samples.jsonl: this run saved no sample generations; try python -m llm_tune generate RUN_DIR.")
    if run.environment is None:
        notes.append("No environment.json: the run was trained before llm_tune recorded its environment.")
    return notes


def _differences(runs: list[RunData]) -> list[tuple[str, list[str]]]:
    """Recipe keys whose values differ between the runs (output_dir, which always does, left out)."""
    from llm_tune.recipe.diff import differing

    found = differing([r.recipe for r in runs], ignore=frozenset({"output_dir"}))
    return [(key, [json.dumps(v) for v in values]) for key, values in found.items()]


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value) if not isinstance(value, (list, dict)) else json.dumps(value)
