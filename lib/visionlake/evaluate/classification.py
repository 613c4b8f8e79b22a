"""Pure classification metrics and the figures logged with every training run."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels.astype(int), predictions.astype(int)), 1)
    return matrix


def per_class_report(matrix: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and support per class (0 where a class was never predicted or never present)."""
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    report = {}
    for index, name in enumerate(names):
        hits = matrix[index, index]
        report[name] = {"precision": float(hits / predicted[index]) if predicted[index] else 0.0,
                        "recall": float(hits / actual[index]) if actual[index] else 0.0,
                        "support": int(actual[index])}
    return report


CLASSIFIER_PANELS = {"loss": ("loss", "val_loss"), "accuracy": ("accuracy", "val_accuracy")}


def plot_curves(history: list[dict[str, float]], path: Path, panels: dict[str, tuple[str, ...]] = CLASSIFIER_PANELS
                ) -> Path:
    """One panel per entry of ``panels`` (title -> metric keys), each metric against the epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (title, keys) in zip(axes[0], panels.items()):
        for key in keys:
            axis.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", label=key)
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1 + 0.6 * len(names), 1 + 0.6 * len(names)))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center", fontsize=8,
                  color="white" if count > matrix.max() / 2 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
