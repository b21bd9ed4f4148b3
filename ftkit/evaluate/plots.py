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


def loss_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> str | None:
    """Training (solid) and validation (dashed) loss against step for each model that has them."""
    fig, ax = _figure(6.0, 4.0)
    drawn = False
    for name, points in curves.items():
        for key, style in (("train_loss", "-"), ("valid_loss", "--")):
            xy = [(p.get("step", i), p[key]) for i, p in enumerate(points) if p.get(key) is not None]
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
    ax.set(xlabel="step", ylabel="loss", title="Training loss")
    ax.legend(fontsize=8)
    return to_data_uri(fig)


def cost_bars(costs: Mapping[str, Mapping[str, float | None]]) -> str | None:
    """Estimated and actual dollars per model, side by side."""
    names = [n for n, c in costs.items() if c.get("estimated") is not None or c.get("actual") is not None]
    if not names:
        return None
    fig, ax = _figure(max(4.0, 1.2 * len(names) + 2), 3.5)
    x = np.arange(len(names))
    est = [costs[n].get("estimated") or 0.0 for n in names]
    act = [costs[n].get("actual") or 0.0 for n in names]
    ax.bar(x - 0.2, est, width=0.4, label="estimated")
    ax.bar(x + 0.2, act, width=0.4, label="actual")
    ax.set_xticks(x, labels=names, rotation=20, ha="right")
    ax.set(ylabel="USD", title="Cost per model")
    ax.legend(fontsize=8)
    return to_data_uri(fig)
