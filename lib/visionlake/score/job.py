"""The batch scoring job (``visionlake score``): classify and anomaly-score a lake table with registered models.

The driver resolves both models to exact versions (a missing model or alias fails here, before any Spark work), reads
the anomaly threshold stored with the detector, and picks the input: a committed ``images`` or ``synthetic`` table
version, or a raw drop that is first ingested by the ingest job's code. Python workers load each model once and
score their partition in batches (``mapInPandas``); nothing is collected to the driver except the summary.

Output: the dataset's ``predictions`` Delta table, partitioned by scoring date. A *slice* is (table, classifier
version, detector version); every run scores the whole table, so scoring a slice again replaces its rows in one
commit (``replaceWhere`` on ``slice_id``: no duplicates, also after new ingests; readers of older versions keep the
replaced rows until ``visionlake vacuum``); rows that cannot be decoded go to the quarantine table with a reason.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from visionlake import tracking
from visionlake.config import Config, ConfigError
from visionlake.lake.store import Lake, LakeError, new_run_id
from visionlake.lake.manifest import Manifest
from visionlake.progress import phase
from visionlake.lake.schema import PREDICTION_FIELDS, QUARANTINE_FIELDS

log = logging.getLogger(__name__)

SCORED_SCHEMA = T.StructType(PREDICTION_FIELDS + [T.StructField("reason", T.StringType(), True),
                                                  T.StructField("detail", T.StringType(), True)])


@dataclass(frozen=True)
class ScoringModels:
    """Everything a worker needs to score, resolved on the driver."""
    classifier: tracking.ModelRef
    detector: tracking.ModelRef
    threshold: float
    tracking_uri: str
    label_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    batch_size: int
    top_k: int
    scoring_run_id: str
    scored_at: dt.datetime


@dataclass
class ScoreSummary:
    dataset: str
    version: int
    run_id: str
    mlflow_run_id: str
    slice_id: str
    scored: int
    quarantined: int
    anomalies: int
    per_label_anomaly_rate: dict[str, float]
    models: dict[str, str]
    seconds: float
    replaced_run: str = ""
    path: str = ""
    table_version: int = -1  # the predictions table's Delta version this run committed

    @property
    def anomaly_rate(self) -> float:
        return self.anomalies / self.scored if self.scored else 0.0

    def report(self) -> str:
        rates = ", ".join(f"{k} {v:.1%}" for k, v in sorted(self.per_label_anomaly_rate.items()))
        replaced = f"; replaced run {self.replaced_run}" if self.replaced_run else ""
        return (f"scored {self.scored} images of {self.dataset!r} in {self.seconds:.0f}s with {self.models['classifier']}"
                f" and {self.models['detector']}: {self.anomalies} anomalies ({self.anomaly_rate:.1%}), "
                f"{self.quarantined} quarantined -> {self.path} (version {self.version}, run {self.run_id}, MLflow "
                f"run {self.mlflow_run_id}{replaced})\n  anomaly rate per predicted label: {rates or 'n/a'}")


# ---- pure helpers -------------------------------------------------------------------------------------------------
def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of the k most probable classes per row, most probable first."""
    k = min(k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=1)


def slice_id(table: str, classifier: tracking.ModelRef, detector: tracking.ModelRef) -> str:
    """A table scored by one classifier version and one detector version. Every run scores the whole table, so a
    new run of the same slice replaces the previous one: one live prediction per image and model pair."""
    key = json.dumps([table, classifier.name, classifier.version, detector.name, detector.version])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def input_fingerprint(manifest: Manifest, table: str) -> str:
    """What the table's content is: the runs whose rows it holds, independent of the table versions."""
    if table == "synthetic":
        return "synthetic:" + ",".join(sorted((manifest.synthetic or {}).get("live_runs", [])))
    return "images:" + ",".join(sorted(manifest.live_runs))


def with_predictions_run(manifest: Manifest, run_id: str, slice_key: str,
                         record: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The predictions table's record after this run (its slice now this run's) and the slice's replaced run."""
    predictions = manifest.predictions or {"slices": {}}
    replaced = predictions["slices"].get(slice_key, {}).get("run_id", "")
    return {"slices": {**predictions["slices"], slice_key: {"run_id": run_id, **record}}}, replaced


# ---- the worker side ----------------------------------------------------------------------------------------------
def _decode_rows(frame: pd.DataFrame, image_shape) -> tuple[list[np.ndarray], list[int], list[tuple[int, str]]]:
    from visionlake.lake.images import decode_stored_image

    images, good, bad = [], [], []
    for position, png in enumerate(frame["image"]):
        try:
            pixels = decode_stored_image(png)
            if pixels.shape != tuple(image_shape):
                raise ValueError(f"shape {pixels.shape}, expected {tuple(image_shape)}")
        except Exception as error:  # noqa: BLE001 - any undecodable row is quarantined with the codec's message
            bad.append((position, f"{type(error).__name__}: {str(error)[:200]}"))
            continue
        images.append(pixels)
        good.append(position)
    return images, good, bad


def score_partition(batches: Iterator[pd.DataFrame], models: ScoringModels) -> Iterator[pd.DataFrame]:
    from visionlake.models.scorers import load_scorer

    # One load of each model per Python worker, however many partitions it scores.
    classifier = tracking.worker_model(models.classifier.uri, models.tracking_uri)
    scorer = tracking.worker_model(models.detector.uri, models.tracking_uri, load=load_scorer)
    columns = SCORED_SCHEMA.fieldNames()
    for frame in _rebatch(batches, models.batch_size):
        images, good, bad = _decode_rows(frame, models.image_shape)
        out = pd.DataFrame({"id": frame["id"].values, "source_path": frame["source_path"].values,
                            "split": frame["split"].values, "label": frame["label"].values})
        if good:
            unit = np.stack(images).astype(np.float32) / 255.0
            probabilities = classifier.predict(unit, batch_size=models.batch_size, verbose=0)
            labels, top = top_k(probabilities, models.top_k)
            scores = scorer.score(unit)
            good_rows = out.iloc[good].copy()
            good_rows["predicted_label"] = labels[:, 0].astype(np.int32)
            good_rows["label_name"] = [models.label_names[i] for i in labels[:, 0]]
            good_rows["confidence"] = top[:, 0].astype(np.float64)
            good_rows["top_k_labels"] = [row.astype(np.int32).tolist() for row in labels]
            good_rows["top_k_probabilities"] = [row.astype(np.float64).tolist() for row in top]
            good_rows["anomaly_score"] = scores.astype(np.float64)
            good_rows["is_anomaly"] = scores > models.threshold
        else:
            good_rows = out.iloc[[]].copy()
        bad_rows = out.iloc[[p for p, _ in bad]].copy()
        bad_rows["reason"] = "corrupt"
        bad_rows["detail"] = [detail for _, detail in bad]
        scored = pd.concat([good_rows, bad_rows], ignore_index=True)
        scored["threshold"] = models.threshold
        scored["classifier_model"], scored["classifier_version"] = models.classifier.name, models.classifier.version
        scored["anomaly_model"], scored["anomaly_version"] = models.detector.name, models.detector.version
        scored["scoring_run_id"], scored["scored_at"] = models.scoring_run_id, models.scored_at
        yield with_null_strings(scored.reindex(columns=columns), SCORED_SCHEMA)


def with_null_strings(frame: pd.DataFrame, schema) -> pd.DataFrame:
    """String columns as objects with ``None`` for missing values. A column no row filled (``detail`` when every
    image decoded) is float NaN after ``concat``; pyarrow >= 15 turns that into a chunked array that PySpark 3.5
    cannot put into its batch."""
    for field in schema.fields:
        if isinstance(field.dataType, T.StringType):
            column = frame[field.name]
            frame[field.name] = column.astype(object).where(column.notna(), None)
    return frame


def _rebatch(batches: Iterator[pd.DataFrame], size: int) -> Iterator[pd.DataFrame]:
    """Arrow batches of any size -> frames of ``size`` rows (the model batch)."""
    pending: list[pd.DataFrame] = []
    count = 0
    for frame in batches:
        pending.append(frame)
        count += len(frame)
        while count >= size:
            joined = pd.concat(pending, ignore_index=True)
            yield joined.iloc[:size]
            pending, count = [joined.iloc[size:]], count - size
    if count:
        yield pd.concat(pending, ignore_index=True)


# ---- the driver side ----------------------------------------------------------------------------------------------
def score_dataset(spark: SparkSession, config: Config) -> ScoreSummary:
    """Scores ``score.table`` of ``score.dataset`` (after ingesting ``score.raw_uri`` when set).

    Raises:
        TrackingError: a model or alias is missing (before any Spark work).
        ConfigError: the models do not fit the dataset, or the detector has no threshold.
        LakeError: no committed version, or the version asked for does not exist.
    """
    import mlflow

    from visionlake.models.scorers import threshold_of

    started = time.perf_counter()
    settings = config.score
    experiment_id = tracking.connect(config.tracking)
    classifier = tracking.resolve_model(settings.classifier, "score.classifier")
    detector = tracking.resolve_model(settings.anomaly_model, "score.anomaly_model")
    threshold = threshold_of(detector)
    lake = Lake(spark, config.lake.root, commit_lock=config.lake.commit_lock, settings=config.lake)
    if settings.raw_uri:
        _ingest_raw_drop(spark, config)
    manifest = lake.read_manifest(settings.dataset, settings.dataset_version or None)
    if manifest is None:
        raise LakeError(f"dataset {settings.dataset!r} has no committed version under {lake.root}; ingest it first "
                        "or set score.raw_uri")
    latest = lake.require_manifest(settings.dataset)
    image = manifest.image
    image_shape = image.shape
    _check_classifier(classifier, image_shape, len(manifest.label_names))
    key = slice_id(settings.table, classifier, detector)
    run_id, now = new_run_id(), dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with tracking.tracked_run(experiment_id, f"score-{settings.dataset}") as run:
        models = ScoringModels(classifier, detector, threshold, config.tracking.tracking_uri,
                               tuple(manifest.label_names), image_shape, settings.batch_size, settings.top_k,
                               run.info.run_id, now)
        mlflow.log_params({"score.dataset": settings.dataset, "score.table": settings.table,
                           "score.dataset_version": manifest.version, "score.batch_size": settings.batch_size,
                           **manifest.version_params((settings.table,))})
        mlflow.set_tags({"job": "score", "classifier.uri": classifier.uri, "anomaly.uri": detector.uri,
                         "anomaly.threshold": repr(threshold), "lake.run_id": run_id, "slice": key})
        table = lake.read_table(settings.dataset, settings.table, manifest)
        log.info("scoring %s of %r v%d with %s and %s (threshold %.6g); slice %s, run %s", settings.table,
                 settings.dataset, manifest.version, classifier.uri, detector.uri, threshold, key, run_id)
        scored = (table.select("id", "source_path", "split", "label", "image")
                  .mapInPandas(partial(score_partition, models=models), SCORED_SCHEMA)
                  .persist(StorageLevel.MEMORY_AND_DISK))
        record = {"table": settings.table, "dataset_version": manifest.version,
                  "input": input_fingerprint(manifest, settings.table), "classifier": classifier.uri,
                  "detector": detector.uri, "threshold": threshold, "mlflow_run_id": run.info.run_id,
                  "scored_at": now.isoformat()}
        section, replaced = with_predictions_run(latest, run_id, key, record)
        try:
            with phase("scoring", spark):
                counts = _write_predictions(lake, latest, run_id, key, section, scored, now)
        finally:
            scored.unpersist()
        version = manifest.version
        summary = ScoreSummary(settings.dataset, version, run_id, run.info.run_id, key, counts["scored"],
                               counts["quarantined"], counts["anomalies"], counts["per_label"],
                               {"classifier": classifier.uri, "detector": detector.uri},
                               time.perf_counter() - started, replaced, lake.paths(settings.dataset).table("predictions"),
                               counts["table_version"])
        _log_summary(summary)
        if settings.anomaly_maps and summary.anomalies:
            try:  # the predictions are committed: a failed extra must not mark the run failed
                _log_anomaly_maps(lake, settings, run_id, models)
            except Exception:  # noqa: BLE001
                log.warning("anomaly maps skipped for run %s", run_id, exc_info=True)
    log.info("%s", summary.report())
    return summary


def _ingest_raw_drop(spark: SparkSession, config: Config) -> None:
    from visionlake.ingest.job import ingest

    raw = replace(config.ingest, dataset=config.score.dataset,
                  source=replace(config.ingest.source, uri=config.score.raw_uri))
    log.info("ingesting the raw drop %s into %r before scoring", config.score.raw_uri, config.score.dataset)
    ingest(spark, replace(config, ingest=raw))


def _check_classifier(classifier: tracking.ModelRef, image_shape, num_classes: int) -> None:
    inputs, outputs = tracking.signature_shapes(classifier)
    takes, gives = inputs[0][1:], outputs[0][-1]
    if takes != list(image_shape) or gives != num_classes:
        raise ConfigError(f"score.classifier {classifier.uri} takes {takes} images into {gives} classes; the dataset "
                          f"has {list(image_shape)} images and {num_classes} classes")


def _write_predictions(lake: Lake, latest: Manifest, run_id: str, key: str, section: dict[str, Any],
                       scored: DataFrame, now: dt.datetime) -> dict[str, Any]:
    good = scored.filter(F.col("reason").isNull()).drop("reason", "detail")
    version = lake.commit_predictions(latest, good.withColumn("scored_date", F.lit(now.date().isoformat()))
                            .withColumn("slice_id", F.lit(key)), run_id, key, section)
    bad = scored.filter(F.col("reason").isNotNull())
    quarantine = bad.select("source_path", "reason", F.concat(F.lit("scoring lake image "), F.col("id"),
                                                              F.lit(": "), F.col("detail")).alias("detail"),
                            F.lit(None).cast("string").alias("source_sha256"), F.lit(now).alias("quarantined_at"))
    quarantine = quarantine.select([f.name for f in QUARANTINE_FIELDS])
    stats = good.groupBy("label_name").agg(F.count("*").alias("n"),
                                           F.sum(F.col("is_anomaly").cast("int")).alias("anomalies")).collect()
    quarantined = bad.count()
    if quarantined:
        lake.append_quarantine(latest.dataset, quarantine.coalesce(1), run_id, "score")
    scored_count = sum(row["n"] for row in stats)
    return {"scored": scored_count, "anomalies": sum(row["anomalies"] for row in stats), "quarantined": quarantined,
            "table_version": version,
            "per_label": {row["label_name"]: row["anomalies"] / row["n"] for row in stats}}


def _log_summary(summary: ScoreSummary) -> None:
    import mlflow

    mlflow.log_metrics({"scored": summary.scored, "anomalies": summary.anomalies,
                        "anomaly_rate": summary.anomaly_rate, "quarantined": summary.quarantined,
                        "seconds": summary.seconds})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "summary.json"
        path.write_text(json.dumps({**summary.__dict__, "anomaly_rate": summary.anomaly_rate}, indent=2, default=str))
        mlflow.log_artifact(str(path), artifact_path="scoring")


def _log_anomaly_maps(lake: Lake, settings, run_id: str, models: ScoringModels) -> None:
    """Per-pixel difference maps of the highest-scoring flagged images (scorers that reconstruct)."""
    import mlflow

    from visionlake.lake.images import decode_stored_image
    from visionlake.models.scorers import anomaly_map_png, load_scorer

    scorer = load_scorer(models.detector.uri)
    predictions = lake.read_latest(settings.dataset, "predictions")
    flagged = (predictions.filter((F.col("run_id") == run_id) & F.col("is_anomaly"))
               .orderBy(F.col("anomaly_score").desc()).limit(settings.max_anomaly_maps).select("id").collect())
    ids = [row["id"] for row in flagged]
    table = lake.read_table(settings.dataset, settings.table)
    rows = table.filter(F.col("id").isin(ids)).select("id", "image").dropDuplicates(["id"]).collect()
    if not rows:
        return
    images = np.stack([decode_stored_image(row["image"]) for row in rows])
    maps = scorer.anomaly_map(images)
    if maps is None:
        return
    with tempfile.TemporaryDirectory() as folder:
        for row, difference in zip(rows, maps):
            (Path(folder) / f"{row['id'][:16]}.png").write_bytes(anomaly_map_png(difference))
        mlflow.log_artifacts(folder, artifact_path="anomaly_maps")
