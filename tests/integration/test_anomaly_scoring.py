"""Anomaly detectors and the batch scoring job on real Spark, Horovod (2 ranks) and a real MLflow registry.

One module-wide workspace: the demo dataset, a classifier and an autoencoder detector (normal = circles and
squares) trained once with tiny settings; then scoring runs over the lake.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.conftest import CLASSIFIER_WORKSPACE_GROUP, delta_rs_ids

from visionlake.train.detectors import train_detector
from visionlake.models.scorers import load_scorer
from visionlake.lake.images import decode_stored_image
from visionlake.ingest.job import ingest
from visionlake.lake.store import Lake
from visionlake.lake.schema import PREDICTIONS_SCHEMA
from visionlake.score.job import ScoringModels, score_dataset, score_partition
from visionlake.tracking import TrackingError, resolve_model

SETTINGS = ["generative.max_steps_per_epoch=6", "generative.quality.samples=32", "anomaly.encoder_epochs=1",
            "anomaly.normal_labels=[circle, square]", "anomaly.false_positive_rate=0.1", "score.batch_size=32"]

pytestmark = CLASSIFIER_WORKSPACE_GROUP


@pytest.fixture(scope="module")
def workspace(classifier_workspace):
    """A config factory over the shared lake and MLflow store (the demo dataset and a champion classifier)."""
    return lambda *overrides: classifier_workspace(*SETTINGS, *overrides)


@pytest.fixture(scope="module")
def detector(spark, workspace):
    return train_detector(spark, workspace("anomaly.method=autoencoder"))


@pytest.fixture(scope="module")
def classifier_champion(workspace) -> str:
    """The classifier version scoring uses (the shared store's champion: the generative module may register more)."""
    from mlflow.tracking import MlflowClient
    uri = workspace().tracking.tracking_uri
    champion = MlflowClient(uri, registry_uri=uri).get_model_version_by_alias("visionlake-classifier", "champion")
    return str(champion.version)


@pytest.fixture(scope="module")
def scored(spark, workspace, detector, classifier_champion):
    return score_dataset(spark, workspace())


def predictions(spark, config):
    return Lake(spark, config.lake.root).read_table("demo", "predictions")


def test_the_detector_is_calibrated_at_the_false_positive_rate_and_registered(detector, workspace, spark):
    calibration = detector.calibration
    n = calibration.calibration_images
    assert n > 0 and 0.1 - 1 / n <= calibration.achieved_false_positive_rate <= 0.1
    assert detector.val_auroc is not None and 0 <= detector.val_auroc <= 1  # val also has triangles, rings, crosses
    config = workspace()
    import mlflow
    mlflow.set_tracking_uri(config.tracking.tracking_uri)
    version = resolve_model("visionlake-anomaly@champion", "test")
    from mlflow.tracking import MlflowClient
    tags = MlflowClient().get_model_version("visionlake-anomaly", version.version).tags
    assert float(tags["anomaly.threshold"]) == calibration.threshold and tags["anomaly.method"] == "autoencoder"
    # The registered scorer reproduces the calibration: the same share of normal val images above the threshold.
    lake = Lake(spark, config.lake.root)
    rows = (lake.read_table("demo", "images").filter("split = 'val' and label_name in ('circle', 'square')")
            .select("image").collect())
    images = np.stack([decode_stored_image(r["image"]) for r in rows])
    scores = load_scorer("models:/visionlake-anomaly@champion").score(images)
    assert (scores > calibration.threshold).mean() == pytest.approx(calibration.achieved_false_positive_rate)


def test_scoring_writes_every_image_once_with_lineage(scored, classifier_champion, workspace, spark):
    config = workspace()
    table = predictions(spark, config)
    assert [(f.name, f.dataType) for f in table.schema] == [(f.name, f.dataType) for f in PREDICTIONS_SCHEMA]
    images = Lake(spark, config.lake.root).read_table("demo", "images")
    assert table.count() == images.count() == scored.scored and scored.quarantined == 0
    assert table.select("id").distinct().count() == images.select("id").distinct().count()
    lineage = table.select("classifier_model", "classifier_version", "anomaly_model", "anomaly_version",
                           "scoring_run_id", "run_id").distinct().collect()
    assert [tuple(r) for r in lineage] == [("visionlake-classifier", classifier_champion, "visionlake-anomaly", "1",
                                            scored.mlflow_run_id, scored.run_id)]
    rows = table.toPandas()
    assert (rows["is_anomaly"] == (rows["anomaly_score"] > rows["threshold"])).all()
    assert rows["top_k_labels"].map(len).eq(3).all() and (rows["confidence"] > 0).all()
    assert scored.anomalies == int(rows["is_anomaly"].sum())
    from mlflow.tracking import MlflowClient
    run = MlflowClient(config.tracking.tracking_uri).get_run(scored.mlflow_run_id)
    assert run.data.metrics["scored"] == scored.scored and run.data.tags["anomaly.uri"] == \
        "models:/visionlake-anomaly/1"


def test_distributed_predictions_equal_in_process_predict(scored, classifier_champion, workspace, spark):
    import mlflow.tensorflow

    config = workspace()
    table = predictions(spark, config).select("id", "predicted_label", "confidence", "anomaly_score")
    images = Lake(spark, config.lake.root).read_table("demo", "images").select("id", "image")
    rows = table.join(images, "id").limit(40).toPandas()
    pixels = np.stack([decode_stored_image(png) for png in rows["image"]]).astype(np.float32) / 255.0
    mlflow.set_tracking_uri(config.tracking.tracking_uri)
    probabilities = mlflow.tensorflow.load_model(f"models:/visionlake-classifier/{classifier_champion}").predict(
        pixels, verbose=0)
    scores = load_scorer("models:/visionlake-anomaly/1").score(pixels)
    np.testing.assert_array_equal(rows["predicted_label"].to_numpy(), probabilities.argmax(axis=1))
    np.testing.assert_allclose(rows["confidence"].to_numpy(), probabilities.max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(rows["anomaly_score"].to_numpy(), scores, rtol=1e-5)


def test_rescoring_the_same_slice_replaces_it(scored, workspace, spark):
    config = workspace()
    again = score_dataset(spark, config)
    assert again.replaced_run == scored.run_id
    table = predictions(spark, config)
    assert table.count() == scored.scored and [r["run_id"] for r in table.select("run_id").distinct().collect()] \
        == [again.run_id]
    assert again.table_version == scored.table_version + 1, "one commit replaces the slice"
    # Any Delta reader sees one prediction per image; the replaced rows stay readable by time travel until
    # `visionlake vacuum`.
    plain = spark.read.format("delta").load(again.path)
    assert plain.count() == plain.select("id").distinct().count() == scored.scored
    assert delta_rs_ids(again.path) == sorted(row.id for row in plain.select("id").collect())
    assert len(delta_rs_ids(again.path, version=scored.table_version)) == scored.scored
    before = spark.read.format("delta").option("versionAsOf", scored.table_version).load(again.path)
    assert before.count() == scored.scored and [r["run_id"] for r in before.select("run_id").distinct().collect()] \
        == [scored.run_id]


def test_undecodable_rows_are_quarantined(scored, workspace, spark):
    import datetime as dt

    import mlflow
    from visionlake.lake.images import encode_png

    config = workspace()
    mlflow.set_tracking_uri(config.tracking.tracking_uri)
    models = ScoringModels(resolve_model("visionlake-classifier/1", "t"), resolve_model("visionlake-anomaly/1", "t"),
                           0.5, config.tracking.tracking_uri, ("circle", "cross", "ring", "square", "triangle"),
                           (32, 32, 3), 8, 3, "run", dt.datetime.now(dt.timezone.utc))
    good = encode_png(np.zeros((32, 32, 3), np.uint8), 1)
    frame = pd.DataFrame({"id": ["a", "b", "c"], "source_path": ["x", "y", "z"], "split": ["test"] * 3,
                          "label": [0, 1, 2], "image": [good, b"not a png", good[:40]]})
    out = pd.concat(list(score_partition(iter([frame]), models)))
    reasons = out.set_index("id")["reason"]
    assert reasons.isna().to_dict() == {"a": True, "b": False, "c": False} and set(reasons.dropna()) == {"corrupt"}
    assert out.set_index("id").loc["a", "predicted_label"] >= 0

    # What the job writes from such rows: predictions for the good one, quarantine rows with the reason.
    from tests.unit.lake_records import a_manifest
    from visionlake.score.job import SCORED_SCHEMA, _write_predictions
    lake = Lake(spark, config.lake.root)
    rows = spark.createDataFrame(out.astype(object).where(out.notna(), None), SCORED_SCHEMA)
    counts = _write_predictions(lake, a_manifest(dataset="quarantine-check"), "r1", "s1", {"slices": {}}, rows,
                                dt.datetime.now(dt.timezone.utc))
    assert counts["scored"] == 1 and counts["quarantined"] == 2
    staged = lake.read_latest("quarantine-check", "quarantine").collect()
    assert sorted(r["source_path"] for r in staged) == ["y", "z"] and {r["reason"] for r in staged} == {"corrupt"}


def test_a_missing_alias_fails_before_any_spark_work(scored, workspace, spark):
    config = workspace("score.anomaly_model=visionlake-anomaly@nope")
    before = Lake(spark, config.lake.root).read_manifest("demo").version
    with pytest.raises(TrackingError, match="score.anomaly_model"):
        score_dataset(spark, config)
    assert Lake(spark, config.lake.root).read_manifest("demo").version == before


@pytest.mark.parametrize("method, engine", [("gan", "horovod"), ("classifier", "horovod"),
                                            ("gan", "tf_distribute")])
def test_the_other_detectors_train_calibrate_and_score(method, engine, workspace, spark, detector):
    summary = train_detector(spark, workspace(f"anomaly.method={method}", f"train.engine={engine}"))
    assert summary.model_version in ("2", "3", "4") and np.isfinite(summary.calibration.threshold)
    scorer = load_scorer(f"models:/visionlake-anomaly/{summary.model_version}")
    scores = scorer.score(np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
    assert scores.shape == (4,) and np.isfinite(scores).all()
    assert (scorer.anomaly_map(np.zeros((2, 32, 32, 3), np.uint8)) is None) == (method == "classifier")


def test_a_jpeg_dataset_scores_like_its_png_twin(scored, workspace, spark):
    """The same raw images stored as JPEG: the scoring job decodes them and predicts what it predicts on PNG."""
    lake = Lake(spark, workspace().lake.root)
    png_rows = lake.read_table("demo", "predictions").select(
        "id", "predicted_label", "anomaly_score", "classifier_version", "anomaly_version").toPandas()
    (classifier, detector), = png_rows[["classifier_version", "anomaly_version"]].drop_duplicates().to_numpy()
    config = workspace("ingest.dataset=demo_jpeg", "ingest.image.codec=jpeg", "score.dataset=demo_jpeg",
                       f"score.classifier=models:/visionlake-classifier/{classifier}",
                       f"score.anomaly_model=models:/visionlake-anomaly/{detector}")
    ingest(spark, config)
    jpeg = score_dataset(spark, config)
    assert lake.read_manifest("demo_jpeg").image.codec == "jpeg" and jpeg.quarantined == 0
    jpeg_rows = lake.read_table("demo_jpeg", "predictions").select("id", "predicted_label", "anomaly_score")
    both = png_rows.merge(jpeg_rows.toPandas(), on="id", suffixes=("_png", "_jpeg"))
    assert len(both) == len(png_rows) == jpeg.scored  # same normalised pixels, same ids
    assert (both["predicted_label_png"] == both["predicted_label_jpeg"]).mean() >= 0.9
    assert np.corrcoef(both["anomaly_score_png"], both["anomaly_score_jpeg"])[0, 1] >= 0.9
