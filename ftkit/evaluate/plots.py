"""The report's plots, drawn with matplotlib and returned as self-contained PNG data URIs.

Every function returns ``data:image/png;base64,...`` so the HTML report needs no other file and no
network. The non-interactive Agg backend is used explicitly: plots work on servers without a display.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _figure(width: float = 5.5, height: float = 4.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    # A bare Figure (not pyplot) keeps no global state and needs no GUI backend.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots()


def to_data_uri(fig: Any) -> str:
    """Render a matplotlib figure as a PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def reliability_diagram(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> str:
    """Accuracy against confidence per bin for one or more models, with the diagonal of perfect calibration."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, bins in curves.items():
        if not bins:
            continue
        conf = [b["confidence"] for b in bins]
        acc = [b["accuracy"] for b in bins]
        sizes = [20 + 200 * b["count"] / max(x["count"] for x in bins) for b in bins]
        ax.plot(conf, acc, marker="o", label=name)
        ax.scatter(conf, acc, s=sizes, alpha=0.3)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="confidence (top-class probability)",
        ylabel="accuracy",
        title="Reliability diagram",
    )
    ax.legend(loc="upper left", fontsize=8)
    return to_data_uri(fig)


def score_distributions(proba: np.ndarray, y_true: np.ndarray, labels: Sequence[str], max_classes: int = 6) -> str:
    """For each class, the histogram of its predicted probability, split by whether it is the true class."""
    classes = list(range(len(labels)))[:max_classes]
    if len(labels) == 2:
        classes = [1]  # binary: one panel, the second class's score, coloured by the true class
    cols = min(3, len(classes))
    rows = (len(classes) + cols - 1) // cols
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    bins = np.linspace(0, 1, 21)
    for ax, j in zip(axes, classes, strict=False):
        if len(labels) == 2:
            for c, colour in ((0, "tab:blue"), (1, "tab:orange")):
                ax.hist(proba[y_true == c, 1], bins=bins, alpha=0.6, color=colour, label=f"true {labels[c]}")
        else:
            ax.hist(proba[y_true == j, j], bins=bins, alpha=0.6, color="tab:orange", label=f"true {labels[j]}")
            ax.hist(proba[y_true != j, j], bins=bins, alpha=0.6, color="tab:blue", label="other classes")
        ax.set(xlabel=f"P({labels[j]})", ylabel="examples", xlim=(0, 1))
        ax.legend(fontsize=7)
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    fig.suptitle("Score distribution per true class")
    return to_data_uri(fig)


def confusion_heatmap(matrix: Sequence[Sequence[int]], rows: Sequence[str], columns: Sequence[str]) -> str:
    """The confusion matrix as an annotated heatmap (rows: true label, columns: answer)."""
    m = np.asarray(matrix)
    size = max(3.5, 0.6 * len(columns) + 2)
    fig, ax = _figure(size + 1, size)
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(columns)), labels=list(columns), rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), labels=list(rows))
    threshold = m.max() / 2 if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > threshold else "black")
    ax.set(xlabel="answer", ylabel="true label", title="Confusion matrix")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return to_data_uri(fig)


def loss_axis(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """What the loss plot's x axis counts: ``step``, ``epoch`` or ``share`` (of each model's training).

    Steps compare like with like only when every model took the same number of them; models trained
    with other batch sizes or data sizes (hf and OpenAI, say) are put on epochs instead, which every
    backend reports, or failing that on the share of training done (step / total steps).
    """
    totals = {_total_steps(points) for points in curves.values() if points}
    if len(totals) <= 1:
        return "step"
    if all(any(p.get("epoch") is not None for p in points) for points in curves.values() if points):
        return "epoch"
    return "share"


def loss_figure(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any | None:
    """The figure of :func:`loss_curves` (None when no model has a loss), for callers that add to it."""
    fig, ax = _figure(6.0, 4.0)
    axis = loss_axis(curves)
    drawn = False
    for name, points in curves.items():
        total = _total_steps(points)
        for key, style in (("train_loss", "-"), ("valid_loss", "--")):
            xy = [(_x(p, i, axis, total), p[key]) for i, p in enumerate(points) if p.get(key) is not None]
            xy = [(x, y) for x, y in xy if x is not None]
            if xy:
                xs, ys = zip(*xy, strict=True)
                ax.plot(
                    xs,
                    ys,
                    linestyle=style,
                    marker="." if len(xs) < 50 else None,
                    label=f"{name} {key.replace('_', ' ')}",
                )
                drawn = True
    if not drawn:
        return None
    xlabel = {"step": "step", "epoch": "epoch", "share": "share of training (step / total steps)"}[axis]
    title = "Training loss" + (" (by epoch: the models took different numbers of steps)" if axis == "epoch" else "")
    ax.set(xlabel=xlabel, ylabel="loss", title=title)
    ax.legend(fontsize=8)
    return fig


def loss_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> str | None:
    """Training (solid) and validation (dashed) loss for each model that has them, on steps or epochs.

    The x axis is chosen by :func:`loss_axis`: steps when all models took the same number, else epochs.
    """
    fig = loss_figure(curves)
    return None if fig is None else to_data_uri(fig)


def _total_steps(points: Sequence[Mapping[str, Any]]) -> int:
    totals = [int(p["total_steps"]) for p in points if p.get("total_steps")]
    if totals:
        return max(totals)
    return max((int(p.get("step") or 0) for p in points), default=0)


def _x(point: Mapping[str, Any], index: int, axis: str, total: int) -> float | None:
    if axis == "epoch":
        epoch = point.get("epoch")
        return None if epoch is None else float(epoch)
    step = point.get("step", index)
    if axis == "share":
        return float(step) / total if total else None
    return float(step)


LOG_SCALE_RATIO = 100.0  # two orders of magnitude apart: a linear axis draws the cheaper bar as nothing


def cost_figure(costs: Mapping[str, Mapping[str, float | None]]) -> Any | None:
    """The figure of :func:`cost_bars` (None when no model has a cost)."""
    names = [n for n, c in costs.items() if c.get("estimated") is not None or c.get("actual") is not None]
    if not names:
        return None
    fig, ax = _figure(max(4.0, 1.2 * len(names) + 2), 3.5)
    x = np.arange(len(names))
    est = [costs[n].get("estimated") for n in names]
    act = [costs[n].get("actual") for n in names]
    positive = [v for v in (*est, *act) if v is not None and v > 0]
    log = bool(positive) and max(positive) / min(positive) >= LOG_SCALE_RATIO
    for offset, values, label in ((-0.2, est, "estimated"), (0.2, act, "actual")):
        heights = [v or 0.0 for v in values]
        bars = ax.bar(x + offset, heights, width=0.4, label=label)
        # Each bar says its amount: on a log axis a $0 bar is not drawn at all, and a reader should not guess.
        ax.bar_label(bars, labels=["-" if v is None else _usd(v) for v in values], fontsize=7, padding=2)
    ax.set_xticks(x, labels=names, rotation=20, ha="right")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(min(positive) / 3, max(positive) * 5)  # room for the labels above the bars
    ax.set(ylabel="USD (log scale)" if log else "USD", title="Cost per model")
    ax.legend(fontsize=8)
    return fig


def cost_bars(costs: Mapping[str, Mapping[str, float | None]]) -> str | None:
    """Estimated and actual dollars per model, side by side; a log axis when they differ by orders of magnitude."""
    fig = cost_figure(costs)
    return None if fig is None else to_data_uri(fig)


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.2g}"
