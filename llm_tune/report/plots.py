"""The report's plots as PNG bytes, drawn on matplotlib Figures directly (the Agg canvas: no pyplot state, no
display needed): loss and learning rate over steps (one run, or several overlaid), and for classification the
confusion matrix and per-class F1."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_tune.report.history import RunData, Series

DPI = 110
WIDTH, HEIGHT = 6.4, 3.6  # inches: every plot the same size, so they pair up in the page's two columns
TRAIN_COLOR, EVAL_COLOR = "#2563eb", "#ea580c"
LOG_ABOVE = 20  # a loss axis spanning more than this ratio is drawn logarithmic
MARKERS_UP_TO = 40  # points per line; above that markers only clutter the line


def loss_plot(runs: list[RunData]) -> bytes | None:
    """Training loss (solid) and validation loss (dashed, dots) per step; None when no run logged a loss.
    Several runs: one color per run, and a legend of run colors and line styles (not of every line)."""
    if not any(r.train_loss or r.eval_loss or r.final_eval_loss for r in runs):
        return None
    fig, ax = _figure()
    one = len(runs) == 1
    for index, run in enumerate(runs):
        train, val = _colors(runs, index)
        _line(ax, run.train_loss, train, "training loss" if one else None, "-")
        _line(ax, run.eval_loss, val, "validation loss" if one else None, "--", marker="o")
        if run.final_eval_loss is not None:
            step, value = run.final_eval_loss
            ax.plot(
                [step],
                [value],
                marker="D",
                linestyle="none",
                color=val,
                markersize=7,
                label="validation loss (classifier, after training)" if one else None,
            )
    ax.set(xlabel="step", ylabel="loss", title="Loss")
    _integer_steps(ax)
    values = [v for r in runs for _, v in r.train_loss + r.eval_loss]
    values += [r.final_eval_loss[1] for r in runs if r.final_eval_loss]
    if min(values) > 0 and max(values) / min(values) > LOG_ABOVE:
        ax.set_yscale("log")  # runs of very different losses: a linear axis would flatten all but the highest
    if one:
        return _png(fig, ax)
    return _png(fig, ax, legend="below", handles=_overlay_legend(runs))


def _overlay_legend(runs: list[RunData]) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=_colors(runs, i)[0], linewidth=3, label=run.name) for i, run in enumerate(runs)]
    handles.append(Line2D([], [], color="#6b7280", linestyle="-", label="training"))
    if any(r.eval_loss for r in runs):
        handles.append(Line2D([], [], color="#6b7280", linestyle="--", marker="o", label="validation"))
    if any(r.final_eval_loss for r in runs):
        handles.append(Line2D([], [], color="#6b7280", linestyle="none", marker="D", label="classifier validation"))
    return handles


def learning_rate_plot(runs: list[RunData]) -> bytes | None:
    if not any(r.learning_rate for r in runs):
        return None
    fig, ax = _figure()
    for index, run in enumerate(runs):
        _line(ax, run.learning_rate, _colors(runs, index)[0], run.name if len(runs) > 1 else "learning rate", "-")
    ax.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    _integer_steps(ax)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    return _png(fig, ax, legend=None if len(runs) == 1 else "below")


def rewards_plot(run: RunData) -> bytes | None:
    """A preference run's rewards of the chosen and rejected answers and their margin, training (solid) and
    validation (dashed, dots); None when the run logged none."""
    if not run.rewards:
        return None
    fig, ax = _figure()
    colors = {"chosen": TRAIN_COLOR, "rejected": EVAL_COLOR, "margins": "#16a34a"}
    for key, series in run.rewards.items():
        name = key.rsplit("/", 1)[1]
        validation = key.startswith("eval_")
        label = f"{name} ({'validation' if validation else 'training'})"
        _line(ax, series, colors[name], label, "--" if validation else "-", marker="o" if validation else None)
    ax.axhline(0.0, color="#9ca3af", linewidth=0.8)
    ax.set(xlabel="step", ylabel="reward (beta x log-ratio)", title="Rewards")
    _integer_steps(ax)
    return _png(fig, ax)


def source_loss_plot(run: RunData) -> bytes | None:
    """Validation loss of each source of the validation rows (dashed, dots), beside the whole set's; None when the
    run's validation did not come from a list of sources."""
    if not run.source_losses:
        return None
    import matplotlib as mpl

    fig, ax = _figure()
    _line(ax, run.eval_loss, "#111827", "all validation rows", "-", marker="o")
    palette = mpl.colormaps["tab10"].colors
    for index, (name, series) in enumerate(run.source_losses.items()):
        _line(ax, series, palette[index % len(palette)], name, "--", marker="o")
    ax.set(xlabel="step", ylabel="loss", title="Validation loss by source")
    _integer_steps(ax)
    return _png(fig, ax)


def confusion_plot(evaluation: dict[str, Any]) -> bytes:
    """Counts per (true, predicted) label, shaded by the share of the true label's rows."""
    from matplotlib.figure import Figure

    labels, matrix = evaluation["labels"], evaluation["confusion_matrix"]
    n = len(labels)
    grow = max(0.0, 0.55 * (n - 4))  # beyond 4 labels the matrix needs room; up to 4 it sits beside the F1 plot
    fig = Figure(figsize=(min(12.0, WIDTH + grow), min(12.0, HEIGHT + grow)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    totals = [max(1, sum(row)) for row in matrix]
    shares = [[count / total for count in row] for row, total in zip(matrix, totals)]
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    if n <= 20:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                color = "white" if shares[i][j] > 0.55 else "#111827"
                ax.text(j, i, f"{count}\n{shares[i][j]:.0%}", ha="center", va="center", color=color, fontsize=10)
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (validation)")
    return _png(fig, ax, legend=None, grid=False)


def f1_plot(evaluation: dict[str, Any]) -> bytes:
    """F1 per class (bars), with precision and recall marked on each bar."""
    from matplotlib.figure import Figure

    labels = [f"{label} (n={n})" for label, n in zip(evaluation["labels"], evaluation["support"])]
    f1, precision, recall = evaluation["f1"], evaluation["precision"], evaluation["recall"]
    fig = Figure(figsize=(WIDTH, max(HEIGHT, 0.4 * len(labels) + 1.6)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    rows = range(len(labels))
    ax.barh(rows, f1, color=TRAIN_COLOR, height=0.6, label="F1")
    ax.plot(precision, rows, "|", color="#111827", markersize=16, markeredgewidth=2, label="precision")
    ax.plot(recall, rows, "x", color=EVAL_COLOR, markersize=8, markeredgewidth=2, label="recall")
    for row, value in zip(rows, f1):  # inside the bar's start, clear of the markers near its end
        inside = value >= 0.12
        ax.text(
            0.01 if inside else value + 0.01,
            row,
            f"{value:.3f}",
            va="center",
            fontsize=9,
            color="white" if inside else "#111827",
            fontweight="bold" if inside else "normal",
        )
    ax.set_yticks(list(rows), labels)
    ax.invert_yaxis()  # the first label on top, as in the tables
    ax.set(xlim=(0.0, 1.04), xlabel="score", title=f"Per-class F1 (macro-F1 {evaluation['macro_f1']:.3f})")
    ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    return _png(fig, ax, legend="below")


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    return fig, fig.subplots()


def _integer_steps(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _colors(runs: list[RunData], index: int) -> tuple[str, str]:
    """One run: training blue, validation orange. Several: one color per run, for both of its lines."""
    if len(runs) == 1:
        return TRAIN_COLOR, EVAL_COLOR
    from matplotlib import colormaps

    color = colormaps["tab10"](index % 10)
    return color, color


def _line(ax: Any, series: Series, color: Any, label: str | None, style: str, marker: str | None = None) -> None:
    if not series:
        return
    steps, values = zip(*series)
    if marker is None and len(series) <= MARKERS_UP_TO:
        marker = "."
    ax.plot(steps, values, linestyle=style, marker=marker, color=color, label=label, linewidth=1.6, markersize=5)


def _png(
    fig: Any, ax: Any, legend: str | None = "inside", grid: bool = True, handles: list[Any] | None = None
) -> bytes:
    """The figure as PNG bytes. legend: "inside" the axes (where matplotlib finds room), "below" them (several
    runs: a legend inside would cover their curves), or None; of `handles`, else of the labelled lines."""
    if grid:
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = handles or ax.get_legend_handles_labels()[0]
    if legend == "inside" and handles:
        ax.legend(handles=handles, frameon=False, fontsize=9)
    elif legend == "below" and handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), frameon=False, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
