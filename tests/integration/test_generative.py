"""GANs, VAE and synthetic data on real Spark, real Horovod (2 ranks) and a real MLflow registry, with tiny data.

One module-wide workspace: the demo dataset, a champion classifier (the FCD judge), then each generative model
trained once for a few steps; the tests check what those runs left behind.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import CLASSIFIER_WORKSPACE_GROUP, delta_rs_ids

from visionlake.lake.reader import open_images
from visionlake.train.generative import train_generative
from visionlake.lake.store import Lake
from visionlake.evaluate.generative import Judge, decoder_of, read_images
from visionlake.lake.schema import SYNTHETIC_SCHEMA
from visionlake.score.synthetic import generate_synthetic
from visionlake.tracking import TrackingError
from visionlake.train.classifier import train_classifier

SETTINGS = ["generative.max_steps_per_epoch=4", "generative.quality.samples=64", "generative.quality.every_epochs=1",
            "synthetic.per_class=12", "synthetic.batch_size=8"]

pytestmark = CLASSIFIER_WORKSPACE_GROUP


@pytest.fixture(scope="module")
def workspace(classifier_workspace):
    """A config factory over the shared lake and MLflow store (the demo dataset and a champion classifier)."""
    return lambda *overrides: classifier_workspace(*SETTINGS, *overrides)


@pytest.fixture(scope="module")
def runs(spark, workspace):
    """Each model trained once; the tests below inspect the results."""
    return {kind: train_generative(spark, workspace(f"generative.model={kind}"))
            for kind in ("dcgan", "cdcgan", "vae")}


def client_of(config):
    from mlflow.tracking import MlflowClient
    return MlflowClient(config.tracking.tracking_uri)


@pytest.mark.parametrize("kind", ["dcgan", "cdcgan"])
def test_a_short_gan_run_changes_both_networks_identically_on_every_rank(runs, workspace, kind):
    summary = runs[kind]
    for record in summary.history:
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert math.isfinite(record[key]), (key, record)
    assert len(set(summary.rank_initial_digests)) == 1  # rank 0's broadcast reached every rank
    assert len(set(summary.rank_weight_digests)) == 1   # and the ranks stayed in step
    assert summary.rank_weight_digests[0] != summary.rank_initial_digests[0]
    assert summary.metrics["fcd"] > 0 and summary.metrics["fcd_train_test"] >= 0
    if kind == "cdcgan":
        assert 0 <= summary.metrics["conditional_accuracy"] <= 1
        requested = workspace().generative.quality.samples
        assert summary.metrics["conditional_accuracy_samples"] == requested  # not capped by the test split
    client = client_of(workspace())
    artifacts = {a.path for a in client.list_artifacts(summary.run_id, "samples")}
    assert artifacts == {"samples/epoch_000.png", "samples/epoch_001.png"}
    assert {a.path for a in client.list_artifacts(summary.run_id, "evaluation")} == {"evaluation/loss_curves.png"}
    assert client.get_registered_model(f"visionlake-{kind}").aliases == {"candidate": 1, "champion": 1}
    assert summary.gate["gate.metric"] == "fcd" and summary.gate["gate.direction"] == "lower"
    run = client.get_run(summary.run_id)
    configured = workspace().generative.gan
    assert run.data.params["generative.gan.learning_rate"] == str(configured.learning_rate)
    assert run.data.params["generative.gan.discriminator_learning_rate"] == str(configured.discriminator_learning_rate)
    assert run.data.params["generative.gan.beta2"] == str(configured.beta2)
    assert run.data.tags["quality.classifier"] == "models:/visionlake-classifier/1"


def test_a_gan_run_registers_the_epoch_with_the_lowest_training_fcd_and_reports_its_figures(runs, workspace,
                                                                                            spark):
    import mlflow.tensorflow

    from visionlake.evaluate.generative import GanQuality
    from visionlake.train.generative import prepare_generative

    summary = runs["cdcgan"]
    judged = [record for record in summary.history if "train_fcd" in record]
    assert len(judged) == 2  # quality every epoch
    kept = min(judged, key=lambda record: record["train_fcd"])
    assert summary.metrics["selected_epoch"] == kept["epoch"] + 1
    assert summary.metrics["fcd"] == pytest.approx(kept["fcd"]) and float(summary.gate["gate.candidate_value"]) == \
        pytest.approx(kept["fcd"], rel=1e-5)
    # The registered generator is that epoch's: measured afresh, its FCD is that epoch's, not the last one's.
    config = workspace("generative.model=cdcgan")
    mlflow.set_tracking_uri(config.tracking.tracking_uri)
    plan = prepare_generative(spark, config)
    quality = GanQuality.prepare(Judge.load(plan.judge.uri), plan.spec, plan.inputs.test_files,
                                 plan.inputs.train_files, plan.inputs.val_files, config.generative.quality.samples,
                                 len(plan.label_names), config.train.seed)
    generator = mlflow.tensorflow.load_model(f"models:/visionlake-cdcgan/{summary.model_version}")
    assert quality.evaluate(generator)["fcd"] == pytest.approx(kept["fcd"], rel=1e-3)


def test_fcd_is_zero_for_a_set_against_itself_symmetric_and_grows_with_noise(workspace, spark):
    from visionlake.lake.reader import InputSpec
    from visionlake.evaluate.measures import frechet_features_distance

    import mlflow

    config = workspace()
    mlflow.set_tracking_uri(config.tracking.tracking_uri)
    judge = Judge.load("models:/visionlake-classifier@champion")
    lake = Lake(spark, config.lake.root)
    files = tuple(lake.table_files("demo", "images", "train", lake.read_manifest("demo")))
    images, _ = read_images(InputSpec((32, 32, 3), batch_size=64), files, 200)
    half_a, half_b = judge.features(images[:100]), judge.features(images[100:])
    assert frechet_features_distance(half_a, half_a) == pytest.approx(0.0, abs=1e-6)
    # 100 vectors give singular covariances: clipping their float-noise eigenvalues differs by ~1e-6 each way round
    assert frechet_features_distance(half_a, half_b) == pytest.approx(frechet_features_distance(half_b, half_a),
                                                                      rel=1e-4)
    rng = np.random.default_rng(0)
    distances = [frechet_features_distance(judge.features(images), judge.features(
        np.clip(images + rng.normal(0, sigma, images.shape), -1, 1).astype(np.float32)))
        for sigma in (0.0, 0.2, 0.5, 1.0)]
    assert distances[0] == pytest.approx(0.0, abs=1e-6)
    assert distances == sorted(distances) and distances[-1] > distances[1] > 0, distances


def test_the_vae_learns_and_samples_from_the_registered_model(runs, workspace, spark):
    import mlflow.tensorflow
    from visionlake.lake.reader import InputSpec

    summary = runs["vae"]
    assert summary.history[-1]["reconstruction"] < summary.history[0]["reconstruction"]
    assert summary.history[-1]["val_loss"] < summary.history[0]["val_loss"]
    assert 0 < summary.metrics["test_mse"] < 1 and -1 <= summary.metrics["test_ssim"] <= 1
    assert summary.metrics["test_kl"] >= 0
    assert summary.gate["gate.metric"] == "test_mse"
    mlflow.set_tracking_uri(workspace().tracking.tracking_uri)
    model = mlflow.tensorflow.load_model("models:/visionlake-vae@champion")
    decoder = decoder_of(model)
    samples = decoder(np.random.default_rng(1).normal(size=(4, 32)).astype(np.float32)).numpy()
    assert samples.shape == (4, 32, 32, 3) and np.isfinite(samples).all() and np.abs(samples).max() <= 1

    # After a few steps the moving batch-norm averages still hold most of their start; the registered model carries
    # statistics recomputed for its weights, so inference reconstructs as training mode does on a batch of everything.
    lake = Lake(spark, workspace().lake.root)
    files = lake.table_files("demo", "images", "train", lake.read_manifest("demo"))
    images, _ = read_images(InputSpec((32, 32, 3), batch_size=64), files, limit=512)
    inference, batch_mode = model(images, training=False).numpy(), model(images, training=True).numpy()
    gap, error = np.abs(inference - batch_mode).mean(), np.abs(batch_mode - images).mean()
    assert gap < 0.1 * error, (gap, error)


def test_synthetic_images_round_trip_through_the_readers_and_mix_into_training(runs, workspace, spark):
    config = workspace("synthetic.model=visionlake-cdcgan@champion")
    summary = generate_synthetic(spark, config)
    assert summary.counts == {name: 12 for name in ("circle", "cross", "ring", "square", "triangle")}
    lake = Lake(spark, config.lake.root)
    table = lake.read_table("demo", "synthetic")
    assert [(f.name, f.dataType) for f in table.schema] == [(f.name, f.dataType) for f in SYNTHETIC_SCHEMA]
    rows = table.collect()
    assert len(rows) == 60 and {r["split"] for r in rows} == {"train"}
    assert {(r["source_model"], r["source_model_version"], r["generation_run_id"]) for r in rows} == {
        ("visionlake-cdcgan", "1", summary.mlflow_run_id)}
    assert all(r["height"] == 32 and r["channels"] == 3 and r["source_path"].startswith("models:/") for r in rows)

    # petastorm + tf.data, exactly as training reads `images`
    from visionlake.lake.reader import InputSpec
    from visionlake.lake.shards import whole
    files = lake.table_files("demo", "synthetic", "train", lake.read_manifest("demo"))
    with open_images(InputSpec((32, 32, 3), batch_size=16), whole(files), training=False) as batches:
        labels = np.concatenate([b[1].numpy() for b in batches])
    assert sorted(np.bincount(labels).tolist()) == [12] * 5

    again = generate_synthetic(spark, config)  # the same request: nothing new, no duplicates
    assert again.already_present and lake.read_table("demo", "synthetic").count() == 60
    assert delta_rs_ids(summary.path) == sorted(r["id"] for r in rows)  # what any Delta reader sees
    assert lake.read_manifest("demo").version == summary.version

    mixed = train_classifier(spark, workspace("train.synthetic_fraction=0.5", "train.epochs=1"))
    tags = client_of(config).get_run(mixed.run_id).data.tags
    assert tags["data.synthetic_rows"] == "60" and tags["data.synthetic_runs"] == summary.run_id


def test_an_unknown_generator_fails_before_any_spark_work(workspace, spark):
    with pytest.raises(TrackingError, match="not in the registry"):
        generate_synthetic(spark, workspace("synthetic.model=visionlake-nothing@champion"))


@pytest.mark.parametrize("kind", ["dcgan", "cdcgan", "vae"])
def test_every_generative_model_trains_on_the_tf_distribute_engine(spark, workspace, kind):
    summary = train_generative(spark, workspace(f"generative.model={kind}", "train.engine=tf_distribute",
                                                "train.reader=arrow", "generative.epochs=1"))
    assert len(summary.rank_initial_digests) == 2 and len(set(summary.rank_initial_digests)) == 1
    assert len(set(summary.rank_weight_digests)) == 1
    assert summary.rank_weight_digests[0] != summary.rank_initial_digests[0]
    assert all(math.isfinite(value) for value in summary.history[-1].values())
    assert client_of(workspace()).get_run(summary.run_id).data.tags["train.engine"] == "tf_distribute"
