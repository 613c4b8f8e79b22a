"""What the notebooks share: open a workspace (config, Spark, lake, MLflow store) and turn lake rows into pictures.

A workspace is the folder a pipeline ran in (``make demo`` uses the checkout): relative paths in its config
(``lake/``, ``mlflow.db``) resolve against it, whatever folder the notebook kernel started in.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from visionlake.config import Config, load_config
from visionlake.lake.images import decode_stored_image
from visionlake.evaluate.measures import image_grid


@dataclass
class Workspace:
    root: Path
    config: Config
    spark: object = None  # pyspark.sql.SparkSession, when opened with Spark
    lake: object = None   # visionlake.lake.store.Lake, when opened with Spark

    @property
    def dataset(self) -> str:
        return self.config.score.dataset

    def close(self) -> None:
        if self.spark is not None:
            self.spark.stop()


def open_workspace(root: str | Path = "..", config_file: Optional[str] = None, *overrides: str,
                   with_spark: bool = True, spark_master: str = "local[2]") -> Workspace:
    """Config rooted at ``root``, MLflow pointed at the workspace's store, and (``with_spark``) a loopback Spark
    session with the lake."""
    from visionlake import tracking

    root = Path(root).resolve()
    config = load_config(config_file, [f"spark.master={spark_master}", *overrides], base_dir=str(root))
    tracking.connect(config.tracking)
    if not with_spark:
        return Workspace(root, config)
    from visionlake.lake.store import Lake
    from visionlake.spark import start_session

    spark = start_session(config.spark)
    spark.sparkContext.setLogLevel("ERROR")
    return Workspace(root, config, spark, Lake(spark, config.lake.root))


def decode_all(pngs: Iterable[bytes]) -> np.ndarray:
    """Stored lake images (PNG or JPEG bytes) -> (n, h, w, c) uint8."""
    return np.stack([decode_stored_image(png) for png in pngs])


def grid_per_label(rows: pd.DataFrame, per_label: int) -> dict[str, np.ndarray]:
    """``label_name`` -> a one-row mosaic of up to ``per_label`` of its images (``image`` holds PNG or JPEG bytes)."""
    return {label: image_grid(decode_all(group["image"].head(per_label)), per_label)
            for label, group in rows.groupby("label_name", sort=True)}


def show_images(images: np.ndarray, titles: Optional[list[str]] = None, columns: int = 8, scale: float = 1.6):
    """A matplotlib figure of ``images`` (uint8 or [0, 1] floats), one tile each with an optional title."""
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * scale, rows * scale * 1.15), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            image = images[index]
            axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
            if titles:
                axis.set_title(titles[index], fontsize=8)
    figure.tight_layout()
    return figure


def score_histogram(scores: pd.Series, groups: pd.Series, threshold: float, bins: int = 40):
    """Overlaid histograms of anomaly scores per group (e.g. true label), with the calibrated threshold."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4))
    edges = np.histogram_bin_edges(scores, bins=bins)
    for name, values in scores.groupby(groups, sort=True):
        axis.hist(values, bins=edges, alpha=0.5, label=str(name))
    axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    axis.set_xlabel("anomaly score")
    axis.set_ylabel("images")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
