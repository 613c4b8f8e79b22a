"""Training, calibration and registration of anomaly detectors (``visionlake train anomaly --method ...``).

Detectors learn from normal images only (``anomaly.normal_labels``, or the whole training split):

* ``autoencoder`` / ``vae``: the generative loop on the normal images; score = reconstruction MSE.
* ``gan``: a DCGAN on the normal images, then an encoder trained to invert the frozen generator (f-AnoGAN's izi_f
  objective: pixel residual + feature_weight x discriminator-feature residual); score = the same residuals.
* ``classifier``: no training: the champion classifier's energy -logsumexp(logits) as an out-of-distribution score.

Every detector is then calibrated on the held-out normal validation images at ``anomaly.false_positive_rate``; the
threshold and the score summary are stored with the registered version (tags and ``calibration.json``). When the
validation split also holds non-normal labels, their AUROC is measured and gates the ``champion`` alias.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pyspark.sql import SparkSession

from visionlake import tracking
from visionlake.evaluate.anomaly import Calibration, calibrate, roc_auc
from visionlake.config import Config, ConfigError
from visionlake.console import library_prints_to_log
from visionlake.lake.reader import InputSpec, parquet_reader
from visionlake.train.generative import GenerativePlan, fit_generative, prepare_generative
from visionlake.lake.store import Lake
from visionlake.lake.manifest import Manifest
from visionlake.train.launcher import init_rank, run_on_ranks
from visionlake.train.checkpoints import NetworkWeights, load_weights
from visionlake.train.loop import LoopJob, RankTask, run_loop, step_averaged
from visionlake.evaluate.measures import to_unit
from visionlake.evaluate.generative import read_images
from visionlake.models.scorers import NORMAL_LABELS_TAG, THRESHOLD_TAG, AnomalyScorer

log = logging.getLogger(__name__)

GATE_METRIC = "val_auroc"


@dataclass
class DetectorSummary:
    run_id: str
    method: str
    model_name: str
    model_version: str
    calibration: Calibration
    val_auroc: Optional[float]
    gate: dict[str, Any]
    seconds: float

    def report(self) -> str:
        auroc = "n/a (no anomalies in val)" if self.val_auroc is None else f"{self.val_auroc:.4f}"
        return (f"anomaly detector {self.method}: run {self.run_id} in {self.seconds:.0f}s; threshold "
                f"{self.calibration.threshold:.6g} flags {self.calibration.achieved_false_positive_rate:.3%} of "
                f"{self.calibration.calibration_images} normal val images (target "
                f"{self.calibration.target_false_positive_rate:.1%}); val AUROC {auroc}\n  registered "
                f"{self.model_name} version {self.model_version}: {self.gate['gate.decision']}")


def normal_label_ids(manifest: Manifest, names: list[str]) -> tuple[int, ...]:
    """Label ids of the configured normal names (all labels when none are configured).

    Raises:
        ConfigError: a name the dataset does not have.
    """
    label_map = manifest.label_map
    unknown = sorted(set(names) - set(label_map))
    if unknown:
        raise ConfigError(f"anomaly.normal_labels: {unknown} not in dataset {manifest.dataset!r}; its labels are "
                          f"{sorted(label_map)}")
    return tuple(sorted(label_map[name] for name in names)) if names else tuple(sorted(label_map.values()))


# ---- the GAN scorer's encoder (rank side) -----------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderJob:
    loop: LoopJob
    gan_settings: Any
    gan_weights: NetworkWeights  # the trained generator and discriminator
    feature_weight: float


class EncoderTask(RankTask):
    """f-AnoGAN izi_f: train E so that G(E(x)) matches x in pixels and in the discriminator's features."""

    def __init__(self, job: EncoderJob, hvd):
        import tensorflow as tf

        from visionlake.models.generative import build_discriminator, build_encoder, build_generator, critic_features

        shape = job.loop.spec.image_shape
        self.generator = build_generator(shape, job.gan_settings)
        self.discriminator = build_discriminator(shape, job.gan_settings)
        load_weights({"generator": self.generator, "discriminator": self.discriminator}, job.gan_weights)
        self.generator.trainable = self.discriminator.trainable = False
        critic = critic_features(self.discriminator)
        self.encoder = build_encoder(shape, job.gan_settings.filters, job.gan_settings.latent_dim)
        self.networks = {"encoder": self.encoder}
        self.optimizers = {"encoder": tf.keras.optimizers.Adam(1e-4, beta_1=0.5, name="encoder_adam")}
        optimizer, encoder, generator = self.optimizers["encoder"], self.encoder, self.generator

        @tf.function
        def step(images):
            with tf.GradientTape() as tape:
                reconstructed = generator(encoder(images, training=True), training=False)
                pixel = tf.reduce_mean(tf.square(images - reconstructed))
                feature = tf.reduce_mean(tf.square(critic(images, training=False) -
                                                   critic(reconstructed, training=False)))
                loss = pixel + job.feature_weight * feature
            step_averaged(tape, loss, encoder.trainable_variables, optimizer, hvd)  # Horovod: the encoder only
            return loss, pixel, feature

        self._step = step

    def train_step(self, images, labels) -> dict[str, Any]:
        loss, pixel, feature = self._step(images)
        return {"encoder_loss": loss, "pixel_residual": pixel, "feature_residual": feature}


def encoder_rank(job: EncoderJob) -> dict[str, Any]:
    hvd = init_rank(job.loop.rank_settings)
    return run_loop(job.loop, EncoderTask(job, hvd), hvd)


# ---- the driver side ----------------------------------------------------------------------------------------------
def train_detector(spark: SparkSession, config: Config) -> DetectorSummary:
    """Trains (if needed), calibrates, logs and registers the ``anomaly.method`` detector on ``train.dataset``.

    Raises:
        LakeError, TrackingError, ConfigError: before any training (missing dataset, store, classifier, labels).
        TrainingError: a rank failed; the MLflow run is marked FAILED.
    """
    import mlflow

    started = time.perf_counter()
    settings = config.anomaly
    lake = Lake(spark, config.lake.root)
    manifest = lake.require_manifest(config.train.dataset, config.train.dataset_version or None)
    experiment_id = tracking.connect(config.tracking)
    normal = normal_label_ids(manifest, settings.normal_labels)
    image = manifest.image
    image_shape = image.shape
    plan = None
    if settings.method != "classifier":
        model = "dcgan" if settings.method == "gan" else settings.method
        # The judge classifier is not needed for a detector: FCD is reported only for generative-model runs. The
        # f-AnoGAN encoder inverts the generator its discriminator was trained against, so no averaged copy either.
        plan = prepare_generative(spark, replace(config, generative=replace(
            config.generative, model=model, quality=replace(config.generative.quality, classifier=""),
            gan=replace(config.generative.gan, average_decay=0.0))), labels=normal)
    classifier = tracking.resolve_model(config.score.classifier, "score.classifier") \
        if settings.method == "classifier" else None
    with tracking.tracked_run(experiment_id, f"anomaly-{settings.method}-{config.train.dataset}") as run:
        run_id = run.info.run_id
        mlflow.log_params(tracking.flatten({"anomaly": config.to_dict()["anomaly"]}))
        mlflow.set_tags({"job": "train_anomaly", "dataset": config.train.dataset,
                         "dataset.version": manifest.version, **manifest.version_params(),
                         "anomaly.method": settings.method,
                         "anomaly.normal_labels": ",".join(settings.normal_labels) or "all"})
        with tempfile.TemporaryDirectory() as folder:
            artifacts = _train_networks(spark, config, plan, classifier, run_id, Path(folder))
            scorer = AnomalyScorer(settings.method, image_shape, settings.feature_weight).load_networks(artifacts)
            calibration, val_auroc = _calibrate(spark, lake, manifest, scorer, normal, settings.false_positive_rate,
                                                image_shape, config.train.reader)
            calibration_path = Path(folder) / "calibration.json"
            calibration_path.write_text(json.dumps({**calibration.to_dict(), "normal_labels": list(normal),
                                                    "method": settings.method}, indent=2))
            mlflow.log_artifact(str(calibration_path), artifact_path="calibration")
            mlflow.log_metrics({"threshold": calibration.threshold,
                                "calibration_fpr": calibration.achieved_false_positive_rate,
                                **({GATE_METRIC: val_auroc} if val_auroc is not None else {})})
            version = _log_and_register(scorer, {**artifacts, "calibration": str(calibration_path)},
                                        settings.registered_model, image_shape)
        _tag_version(settings.registered_model, version, calibration, settings.method, normal)
        gate = tracking.gate_and_promote(settings.registered_model, version, GATE_METRIC, val_auroc,
                                         comparable_on=(NORMAL_LABELS_TAG,))
    summary = DetectorSummary(run_id, settings.method, settings.registered_model, version, calibration, val_auroc,
                              gate, time.perf_counter() - started)
    log.info("%s", summary.report())
    return summary


def _train_networks(spark, config: Config, plan: Optional[GenerativePlan], classifier, run_id: str,
                    folder: Path) -> dict[str, str]:
    """Trains what the method needs and saves each network as ``<name>.keras``; returns name -> path."""
    import mlflow.tensorflow

    settings = config.anomaly
    if settings.method == "classifier":
        return _save(folder, classifier=mlflow.tensorflow.load_model(classifier.uri))
    fit = fit_generative(spark, plan, run_id)
    if settings.method in ("autoencoder", "vae"):
        return _save(folder, autoencoder=fit.model)
    networks = fit.networks
    loop = replace(plan.loop(run_id, settings.encoder_epochs),
                   checkpoint_uri=f"{config.train.checkpoint_root}/{run_id}/encoder")
    job = EncoderJob(loop=loop, gan_settings=config.generative.gan, gan_weights=fit.weights,
                     feature_weight=settings.feature_weight)
    log.info("training the GAN scorer's encoder for %d epoch(s) against the frozen generator", settings.encoder_epochs)
    results = sorted(run_on_ranks(spark, encoder_rank, (job,), plan.num_proc, plan.rank_settings.engine),
                     key=lambda r: r["rank"])
    from visionlake.models.generative import build_encoder

    encoder = build_encoder(plan.spec.image_shape, config.generative.gan.filters, config.generative.gan.latent_dim)
    load_weights({"encoder": encoder}, results[0]["best_weights"])
    return _save(folder, encoder=encoder, generator=networks["generator"], discriminator=networks["discriminator"])


def _save(folder: Path, **networks) -> dict[str, str]:
    paths = {}
    for name, network in networks.items():
        paths[name] = str(folder / f"{name}.keras")
        network.save(paths[name])
    return paths


def _calibrate(spark, lake: Lake, manifest, scorer: AnomalyScorer, normal: tuple[int, ...], rate: float,
               image_shape, reader: str) -> tuple[Calibration, Optional[float]]:
    """Threshold on the normal validation images; AUROC when the validation split also has other labels."""
    files = tuple(lake.table_files(manifest.dataset, "images", "val", manifest))
    spec = InputSpec(image_shape, batch_size=256, codec=manifest.image.codec, reader=parquet_reader(reader))
    images, labels = read_images(spec, files, limit=10 ** 9)
    if not len(images):
        raise ConfigError(f"dataset {manifest.dataset!r} has no validation images to calibrate the threshold on")
    scores = scorer.score(to_unit(images))
    is_normal = np.isin(labels, normal)
    calibration = calibrate(scores[is_normal], rate)
    val_auroc = roc_auc(scores, ~is_normal) if 0 < is_normal.sum() < len(is_normal) else None
    return calibration, val_auroc


def _log_and_register(scorer: AnomalyScorer, artifacts: dict[str, str], registered_name: str, image_shape) -> str:
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    example = np.zeros((2, *image_shape), np.float32)
    scorer_for_logging = AnomalyScorer(scorer.method, scorer.image_shape, scorer.feature_weight)
    signature = infer_signature(example, scorer.score(example))
    with library_prints_to_log("mlflow"):
        info = mlflow.pyfunc.log_model(name="model", python_model=scorer_for_logging, artifacts=artifacts,
                                       signature=signature, input_example=example,
                                       registered_model_name=registered_name,
                                       pip_requirements=tracking.model_requirements(tracking.SCORER_PACKAGES))
    return str(info.registered_model_version)


def _tag_version(name: str, version: str, calibration: Calibration, method: str, normal: tuple[int, ...]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    tags = {THRESHOLD_TAG: repr(calibration.threshold), "anomaly.method": method,
            "anomaly.false_positive_rate": str(calibration.target_false_positive_rate),
            "anomaly.calibration_fpr": f"{calibration.achieved_false_positive_rate:.6f}",
            "anomaly.calibration_images": str(calibration.calibration_images),
            NORMAL_LABELS_TAG: ",".join(map(str, normal)),
            "anomaly.score_summary": json.dumps(calibration.quantiles)}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
