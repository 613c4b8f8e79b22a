"""The demo's report: one HTML file with every picture inline (no server, no other file), that a person opens after
``visionlake demo``: the headline figures, the conditional GAN's samples per class, the classifier's confusion
matrix, the anomaly score histogram with the threshold, and the top anomalies next to their difference maps.

``render_html`` and the picture helpers are pure; ``collect_report`` is the I/O edge (MLflow artifacts, the lake).
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from visionlake.config import Config
    from visionlake.score.job import ScoreSummary

TOP_ANOMALIES = 12
HISTOGRAM_BINS = 40


@dataclass(frozen=True)
class Anomaly:
    """One flagged image: its stored pixels and, for detectors that reconstruct, its difference map (PNG bytes)."""
    image_id: str
    predicted_label: str
    score: float
    image_png: bytes
    map_png: Optional[bytes] = None


@dataclass
class ReportInputs:
    dataset: str
    figures: dict[str, str]                      # headline figure -> shown value
    class_samples: list[tuple[str, bytes]]       # class name -> a PNG strip of generated samples
    confusion_png: Optional[bytes]
    histogram_png: Optional[bytes]
    threshold: Optional[float]
    anomalies: list[Anomaly] = field(default_factory=list)
    generated_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def _img(png: bytes, alt: str, css_class: str = "") -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img class="{css_class}" alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
h1 { margin-bottom: 0.2rem; } .when { color: #777; margin-top: 0; }
table.figures td { padding: 0.2rem 1rem 0.2rem 0; } table.figures td.value { font-weight: 600; }
.samples td.name { padding-right: 1rem; font-weight: 600; } .pixelated { image-rendering: pixelated; }
.anomalies { display: flex; flex-wrap: wrap; gap: 1rem; }
.anomaly { border: 1px solid #ddd; padding: 0.5rem; text-align: center; font-size: 0.85rem; }
.anomaly img { width: 96px; height: 96px; }
.missing { color: #a00; }
"""


def render_html(inputs: ReportInputs) -> str:
    """The report as one self-contained HTML document. After the page loads, ``body[data-images-loaded]`` holds
    ``loaded/total`` images, which a headless browser reads back."""
    figures = "".join(f"<tr><td>{html.escape(name)}</td><td class='value'>{html.escape(value)}</td></tr>"
                      for name, value in inputs.figures.items())
    parts = [f"<h1>visionlake demo: dataset {html.escape(inputs.dataset)!s}</h1>",
             f"<p class='when'>{html.escape(inputs.generated_at)}</p>",
             "<h2>Figures</h2>", f"<table class='figures'>{figures}</table>",
             "<h2>Conditional GAN: generated samples per class</h2>"]
    if inputs.class_samples:
        rows = "".join(f"<tr><td class='name'>{html.escape(name)}</td><td>{_img(png, name, 'pixelated')}</td></tr>"
                       for name, png in inputs.class_samples)
        parts.append(f"<table class='samples'>{rows}</table>")
    else:
        parts.append("<p class='missing'>no sample grid was logged</p>")
    parts.append("<h2>Classifier: confusion matrix (test split)</h2>")
    parts.append(_img(inputs.confusion_png, "confusion matrix") if inputs.confusion_png else
                 "<p class='missing'>no confusion matrix was logged</p>")
    threshold = "" if inputs.threshold is None else f" (threshold {inputs.threshold:.4g})"
    parts.append(f"<h2>Anomaly scores{threshold}</h2>")
    parts.append(_img(inputs.histogram_png, "anomaly score histogram") if inputs.histogram_png else
                 "<p class='missing'>no scores</p>")
    parts.append(f"<h2>Top anomalies ({len(inputs.anomalies)})</h2><div class='anomalies'>")
    for anomaly in inputs.anomalies:
        pictures = _img(anomaly.image_png, f"image {anomaly.image_id}", "pixelated")
        if anomaly.map_png:
            pictures += " " + _img(anomaly.map_png, f"difference map {anomaly.image_id}", "pixelated")
        parts.append(f"<div class='anomaly'>{pictures}<br>{html.escape(anomaly.predicted_label)}, score "
                     f"{anomaly.score:.4g}<br><code>{html.escape(anomaly.image_id[:12])}</code></div>")
    parts.append("</div>")
    script = ("window.addEventListener('load', () => { const all = [...document.images]; "
              "document.body.dataset.imagesLoaded = all.filter(i => i.complete && i.naturalWidth > 0).length "
              "+ '/' + all.length; });")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>visionlake demo report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}<script>{script}</script></body></html>")


def histogram_png(scores: np.ndarray, threshold: Optional[float]) -> bytes:
    """Anomaly scores as a histogram, with the calibrated threshold as a vertical line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.2))
    axis.hist(scores, bins=HISTOGRAM_BINS, color="#4c78a8")
    if threshold is not None:
        axis.axvline(threshold, color="#e45756", linestyle="--", label=f"threshold {threshold:.4g}")
        axis.legend()
    axis.set_xlabel("anomaly score")
    axis.set_ylabel("images")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def grid_rows(grid_png: bytes, rows: int) -> list[bytes]:
    """A sample grid with one row per class, cut into one PNG strip per row, scaled up 3x for the eye."""
    from PIL import Image

    grid = Image.open(io.BytesIO(grid_png))
    height = grid.height // rows
    strips = []
    for row in range(rows):
        strip = grid.crop((0, row * height, grid.width, (row + 1) * height))
        strip = strip.resize((strip.width * 3, strip.height * 3), Image.NEAREST)
        buffer = io.BytesIO()
        strip.save(buffer, format="PNG")
        strips.append(buffer.getvalue())
    return strips


def as_png(image: np.ndarray) -> bytes:
    """A uint8 image (H, W, C) as PNG bytes."""
    from PIL import Image

    pixels = image[..., 0] if image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _artifact(run_id: str, path: str, tracking_uri: str) -> Optional[bytes]:
    """An MLflow artifact's bytes, or None when the run did not log it."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as folder:
        try:
            local = download_artifacts(run_id=run_id, artifact_path=path, dst_path=folder, tracking_uri=tracking_uri)
        except (MlflowException, OSError):
            return None
        return Path(local).read_bytes() if Path(local).is_file() else None


def _latest_grid(run_id: str, tracking_uri: str) -> Optional[bytes]:
    from mlflow.tracking import MlflowClient

    grids = sorted(item.path for item in MlflowClient(tracking_uri).list_artifacts(run_id, "samples")
                   if item.path.endswith(".png"))
    return _artifact(run_id, grids[-1], tracking_uri) if grids else None


def collect_report(spark: "SparkSession", config: "Config", figures: dict[str, str], classifier_run: str,
                   generator_run: str, scoring: "ScoreSummary", threshold: Optional[float]) -> ReportInputs:
    """Gathers the report's pictures: from MLflow (the GAN's last sample grid, the confusion matrix, the scoring
    run's anomaly maps) and from the lake (this scoring run's predictions and the flagged images)."""
    from pyspark.sql import functions as F

    from visionlake.lake.images import decode_stored_image
    from visionlake.lake.store import Lake

    uri = config.tracking.tracking_uri
    lake = Lake(spark, config.lake.root)
    manifest = lake.require_manifest(scoring.dataset)
    names = list(manifest.label_names)
    grid = _latest_grid(generator_run, uri)
    samples = list(zip(names, grid_rows(grid, len(names)))) if grid and names else []

    predictions = lake.read_table(scoring.dataset, "predictions", manifest).filter(F.col("run_id") == scoring.run_id)
    scores = np.array([row[0] for row in predictions.select("anomaly_score").collect()], np.float64)
    top = (predictions.filter(F.col("is_anomaly")).orderBy(F.col("anomaly_score").desc()).limit(TOP_ANOMALIES)
           .select("id", "label_name", "anomaly_score").collect())
    images = {row["id"]: row["image"] for row in lake.read_table(scoring.dataset, config.score.table, manifest)
              .filter(F.col("id").isin([row["id"] for row in top])).select("id", "image").collect()}
    anomalies = [Anomaly(row["id"], row["label_name"], float(row["anomaly_score"]),
                         as_png(decode_stored_image(images[row["id"]])),
                         _artifact(scoring.mlflow_run_id, f"anomaly_maps/{row['id'][:16]}.png", uri))
                 for row in top if row["id"] in images]
    return ReportInputs(dataset=scoring.dataset, figures=figures, class_samples=samples,
                        confusion_png=_artifact(classifier_run, "evaluation/confusion_matrix.png", uri),
                        histogram_png=histogram_png(scores, threshold) if len(scores) else None,
                        threshold=threshold, anomalies=anomalies)
