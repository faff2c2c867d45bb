"""Matplotlib figures for the stages as PNG bytes (Agg backend, no display needed, byte-stable).

matplotlib is imported on first use, not at import time: it costs most of a
second, which a stage that stops at a bad param should not pay.
"""

from __future__ import annotations

import numpy as np

from stages._io import figure_png


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_curve(epochs: list[int], train_loss: list[float], val_loss: list[float] | None,
               val_accuracy: list[float] | None, saved_epoch: int) -> bytes:
    """Training (and validation) loss per epoch, validation accuracy on a second axis, and a line at
    the epoch whose weights the model holds."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, train_loss, label="train loss", color="tab:blue")
    if val_loss is not None:
        ax.plot(epochs, val_loss, label="validation loss", color="tab:orange")
    ax.axvline(saved_epoch, color="black", linestyle=":", linewidth=1.2, label=f"saved: epoch {saved_epoch}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # no epoch 2.5 on a short run
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if val_accuracy is not None:
        ax2 = ax.twinx()
        ax2.plot(epochs, val_accuracy, label="validation accuracy", color="tab:green", linestyle="--")
        ax2.set_ylabel("validation accuracy")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="center right")
    ax.set_title(f"Loss per epoch; the model holds epoch {saved_epoch}'s weights")
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png


def per_class(values: dict[str, list[float]], metrics: tuple[str, ...]) -> bytes:
    """Horizontal bars: for each class (top to bottom in label order), one bar per metric in [0, 1]."""
    plt = _pyplot()
    names = list(values)
    k, m = len(names), len(metrics)
    fig, ax = plt.subplots(figsize=(7, 0.45 * k * m / 2 + 1.8))
    height = 0.8 / m
    for j, metric in enumerate(metrics):
        rows = [i + j * height for i in range(k)]
        bars = ax.barh(rows, [values[n][j] for n in names], height=height, label=metric)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_yticks([i + height * (m - 1) / 2 for i in range(k)], names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("score on the test split")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 * 6 / (k * m / 2 + 3)), ncol=m, fontsize=8, frameon=False)
    ax.set_title("Per-class precision, recall and F1 (test split)")
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png


def confusion_matrix(counts: np.ndarray, class_names: list[str]) -> bytes:
    """Counts (K, K) as a heat map, the count written in every cell; rows true, columns predicted."""
    plt = _pyplot()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 1.5))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = counts.max() / 2 if counts.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center",
                    color="white" if counts[i, j] > threshold else "black")
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png


def image_gallery(images: np.ndarray, captions: list[str], columns: int = 4,
                  title: str = "") -> bytes:
    """A grid of RGB images (M, 32, 32, 3) uint8, each with a caption under it."""
    plt = _pyplot()
    m = len(images)
    rows = max(1, -(-m // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    if m == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png
