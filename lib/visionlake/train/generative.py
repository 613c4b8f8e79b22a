"""Distributed training of the generative models (DCGAN, cDCGAN, VAE, autoencoder) on the shared Horovod loop.

GANs: separate Adam optimizers for G and D (distinct names), one averaged step (``loop.step_averaged``) each, k
discriminator steps per generator step, non-saturating or minimax G loss, one-sided label smoothing, per-rank noise
streams.
VAE/autoencoder: summed squared error (+ KL for the VAE) with the reparameterisation trick.
Quality metrics and sample grids are computed on rank 0 every ``generative.quality.every_epochs`` epochs and after
the last; the driver then registers the generator of the epoch with the lowest FCD against the training images (or
the autoencoder of the last epoch) and gates it on FCD (or test MSE).
"""
from __future__ import annotations

import collections
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from pyspark.sql import SparkSession

from visionlake import tracking
from visionlake.config import Config, ConfigError, GenerativeConfig
from visionlake.evaluate.classification import plot_curves
from visionlake.lake.reader import parquet_reader
from visionlake.train.driver import TrainingPlan, open_dataset, plan_training, train_on_ranks
from visionlake.train.launcher import init_rank
from visionlake.train.checkpoints import NetworkWeights, load_weights
from visionlake.train.loop import LoopJob, RankTask, average_over_ranks, run_loop, step_averaged, weights_digest

log = logging.getLogger(__name__)

# What the registry gate compares, per model kind: (metric, higher is better).
GATES = {"dcgan": ("fcd", False), "cdcgan": ("fcd", False), "vae": ("test_mse", False),
         "autoencoder": ("test_mse", False)}
LOSS_PANELS = {"gan": {"losses": ("d_loss", "g_loss"), "discriminator": ("d_real", "d_fake")},
               "autoencoder": {"loss": ("loss", "val_loss"), "terms": ("reconstruction", "kl")}}
NOISE_STREAM_STRIDE = 1_000_003  # ranks draw from disjoint noise streams: seed + rank * stride
AVERAGE_GENERATOR = "generator_average"  # the moving average of the generator's weights (gan.average_decay)
GAN_SELECTION = ("train_fcd", "min")  # what a GAN run with an FCD judge keeps the weights of
STATISTICS_IMAGES = 512  # per rank: the latest training images an autoencoder's batch-norm statistics are taken over


@dataclass(frozen=True)
class GenerativeJob:
    loop: LoopJob
    settings: GenerativeConfig
    num_classes: int
    test_files: tuple[str, ...]
    quality_train_files: tuple[str, ...]  # real training images for the FCD(train, test) floor
    quality_val_files: tuple[str, ...]    # real validation images for val_fcd
    judge_uri: Optional[str]               # the resolved FCD classifier, models:/name/version


@dataclass
class GenerativeSummary:
    run_id: str
    model_kind: str
    model_name: str
    model_version: str
    gate: dict[str, Any]
    metrics: dict[str, float]
    history: list[dict[str, float]]
    seconds: float
    rank_weight_digests: list[str] = field(default_factory=list)
    rank_initial_digests: list[str] = field(default_factory=list)

    def report(self) -> str:
        figures = ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.metrics.items()))
        return (f"trained {self.model_kind} run {self.run_id} in {self.seconds:.0f}s over {len(self.history)} "
                f"epoch(s): {figures}\n  registered {self.model_name} version {self.model_version}: "
                f"{self.gate['gate.decision']} ({self.gate['gate.metric']} {self.gate['gate.candidate_value']} vs "
                f"champion's {self.gate['gate.champion_value']})")


# ---- the rank side ------------------------------------------------------------------------------------------------
def _noise(job: GenerativeJob, rank: int):
    import tensorflow as tf

    return tf.random.Generator.from_seed(job.loop.rank_settings.seed + rank * NOISE_STREAM_STRIDE)


def _log_grid(client, run_id: str, grid, epoch: int) -> None:
    """A sample grid as the MLflow artifact samples/epoch_NNN.png (rank 0)."""
    from visionlake.evaluate.generative import write_png

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"epoch_{epoch:03d}.png"
        write_png(grid, path)
        client.log_artifact(run_id, str(path), artifact_path="samples")


def _quality_due(job: GenerativeJob, epoch: int, last: bool) -> bool:
    return last or (epoch + 1) % job.settings.quality.every_epochs == 0


def make_gan_steps(generator, discriminator, g_optimizer, d_optimizer, noise, settings, conditional: bool, hvd):
    """The discriminator and generator steps, each with its own tape, optimizer and Horovod allreduce."""
    import tensorflow as tf

    bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    class_loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    latent_dim = settings.latent_dim
    auxiliary = isinstance(discriminator.output, list)  # AC-GAN: the discriminator also names the class

    def inputs(images_or_noise, labels):
        return [images_or_noise, labels[:, None]] if conditional else images_or_noise

    def judge(images, labels):
        """(real/fake logits, class loss against ``labels``: 0 without the auxiliary head)."""
        outputs = discriminator(inputs(images, labels), training=True)
        if not auxiliary:
            return outputs, 0.0
        return outputs[0], settings.class_loss_weight * class_loss(labels, outputs[1])

    @tf.function
    def discriminator_step(real, labels):
        latent = noise.normal([tf.shape(real)[0], latent_dim])
        with tf.GradientTape() as tape:
            fake = generator(inputs(latent, labels), training=True)
            with tf.GradientTape() as slope_tape:
                slope_tape.watch(real)
                real_logits, real_class_loss = judge(real, labels)
                real_total = tf.reduce_sum(real_logits)
            fake_logits, _ = judge(fake, labels)
            penalty = 0.0
            if settings.r1_gamma:  # differentiated again by the outer tape: the penalty trains D
                slopes = slope_tape.gradient(real_total, real)
                penalty = 0.5 * settings.r1_gamma * tf.reduce_mean(tf.reduce_sum(tf.square(slopes), axis=[1, 2, 3]))
            # One-sided label smoothing: real targets at settings.real_label, fake targets stay 0. The class head
            # learns from real images only: trained on fakes too, it lets the generator code classes in colour.
            loss = (bce(tf.fill(tf.shape(real_logits), settings.real_label), real_logits)
                    + bce(tf.zeros_like(fake_logits), fake_logits) + real_class_loss + penalty)
        step_averaged(tape, loss, discriminator.trainable_variables, d_optimizer, hvd)  # Horovod: D's own allreduce
        return loss, tf.reduce_mean(tf.sigmoid(real_logits)), tf.reduce_mean(tf.sigmoid(fake_logits))

    @tf.function
    def generator_step(labels):
        latent = noise.normal([tf.shape(labels)[0], latent_dim])
        with tf.GradientTape() as tape:
            fake_logits, fake_class_loss = judge(generator(inputs(latent, labels), training=True), labels)
            if settings.loss == "non_saturating":  # maximise log D(G(z)): strong gradients early on
                loss = bce(tf.ones_like(fake_logits), fake_logits)
            else:  # the original minimax: minimise log(1 - D(G(z)))
                loss = -bce(tf.zeros_like(fake_logits), fake_logits)
            loss += fake_class_loss  # AC-GAN: images that the discriminator files under their own label
        step_averaged(tape, loss, generator.trainable_variables, g_optimizer, hvd)  # Horovod: G's own allreduce
        return loss

    return discriminator_step, generator_step


def make_average_update(average, network, decay: float):
    """One step of ``average <- decay * average + (1 - decay) * network`` over all weights (batch-norm statistics
    included); every rank computes it from the same allreduced weights, so the averages stay identical."""
    import tensorflow as tf

    pairs = list(zip(average.weights, network.weights))

    @tf.function
    def update():
        for averaged, current in pairs:
            averaged.assign(decay * averaged + (1.0 - decay) * current)

    return update


def registered_network(settings: GenerativeConfig, networks: dict[str, Any]):
    """The network a generative run registers: the (averaged) generator, or the autoencoder."""
    if not settings.is_gan:
        return networks["autoencoder"]
    return networks.get(AVERAGE_GENERATOR, networks["generator"])


class GanTask(RankTask):
    def __init__(self, job: GenerativeJob, hvd):
        import tensorflow as tf

        from visionlake.models.generative import build_discriminator, build_generator

        self.job, self.hvd = job, hvd
        gan = job.settings.gan
        self.conditional = job.settings.model == "cdcgan"
        classes = job.num_classes if self.conditional else 0
        shape = job.loop.spec.image_shape
        self.generator = build_generator(shape, gan, classes)
        self.discriminator = build_discriminator(shape, gan, classes)
        self.networks = {"generator": self.generator, "discriminator": self.discriminator}
        # The sampled, judged and registered generator: the trained one, or the moving average of its weights
        # (a network of its own, so checkpoints, broadcasts and the driver's copy carry it like any other).
        self.sampler = self.generator
        self._update_average = None
        if gan.average_decay:
            self.sampler = build_generator(shape, gan, classes)
            self.sampler.set_weights(self.generator.get_weights())
            self.networks[AVERAGE_GENERATOR] = self.sampler
            self._update_average = make_average_update(self.sampler, self.generator, gan.average_decay)
        self._sampler_start = weights_digest(self.sampler)
        # Distinct names keep the two optimizers' slots (and their Horovod broadcasts) apart.
        rates = {"generator": gan.learning_rate, "discriminator": gan.discriminator_learning_rate or gan.learning_rate}
        self.optimizers = {role: tf.keras.optimizers.Adam(rate, beta_1=gan.beta1, beta_2=gan.beta2, name=f"{role}_adam")
                           for role, rate in rates.items()}
        self._d_step, self._g_step = make_gan_steps(
            self.generator, self.discriminator, self.optimizers["generator"], self.optimizers["discriminator"],
            _noise(job, hvd.rank()), gan, self.conditional, hvd)
        self._steps, self._g_loss = 0, float("nan")
        self._quality = None
        self._lowest_train_fcd = math.inf

    def after_restore(self) -> None:
        # A checkpoint from a run started without averaging has no average: start it from the restored generator,
        # not from the random weights it was built with.
        if self.sampler is not self.generator and weights_digest(self.sampler) == self._sampler_start:
            self.sampler.set_weights(self.generator.get_weights())

    def train_step(self, images, labels) -> dict[str, Any]:
        d_loss, d_real, d_fake = self._d_step(images, labels)
        # The generator steps after the first of every k discriminator steps, so g_loss exists from the first batch.
        if self._steps % self.job.settings.gan.discriminator_steps == 0:
            self._g_loss = float(self._g_step(labels))
            if self._update_average is not None:
                self._update_average()
        self._steps += 1
        return {"d_loss": d_loss, "d_real": d_real, "d_fake": d_fake, "g_loss": self._g_loss}

    def on_epoch_end_rank_zero(self, epoch: int, last: bool, client, run_id: str) -> dict[str, float]:
        from visionlake.evaluate.generative import GanQuality, Judge, gan_grid

        due = _quality_due(self.job, epoch, last)
        seed = self.job.loop.rank_settings.seed
        if due:
            _log_grid(client, run_id, gan_grid(self.sampler, self.job.num_classes, seed), epoch)
        if not self.job.judge_uri:
            return {}
        if self._quality is None:
            self._quality = GanQuality.prepare(Judge.load(self.job.judge_uri), self.job.loop.spec,
                                               self.job.test_files, self.job.quality_train_files,
                                               self.job.quality_val_files, self.job.settings.quality.samples,
                                               self.job.num_classes, seed)
        sample = self._quality.sample(self.sampler)
        figures = judged_figures(self._quality, sample, due, self._lowest_train_fcd)
        self._lowest_train_fcd = min(self._lowest_train_fcd, sample.train_fcd)
        return figures


def judged_figures(quality, sample, due: bool, lowest_train_fcd: float) -> dict[str, float]:
    """An epoch's figures from a judged sample: all of them when quality is due, and between those epochs only the
    selection figure (``train_fcd``), unless it beats every earlier epoch's. So every epoch is a candidate to keep,
    and the one a run keeps reports all its figures. (Selecting on every epoch rather than every second: 1.26-1.83x
    the floor against 1.75-2.11x for one of three seeds in single-process runs of the demo, the same for the others.)
    """
    if due or sample.train_fcd < lowest_train_fcd:
        return quality.figures(sample)
    return {GAN_SELECTION[0]: sample.train_fcd}


class AutoencoderTask(RankTask):
    def __init__(self, job: GenerativeJob, hvd):
        import tensorflow as tf

        from visionlake.models.generative import build_autoencoder

        self.job, self.hvd = job, hvd
        settings = job.settings.autoencoder
        self.variational = job.settings.model == "vae"
        self.autoencoder = build_autoencoder(job.loop.spec.image_shape, settings, self.variational)
        self.networks = {"autoencoder": self.autoencoder.model}
        self.optimizers = {"autoencoder": tf.keras.optimizers.Adam(settings.learning_rate, name="autoencoder_adam")}
        self._step = self._make_step(_noise(job, hvd.rank()))
        self._quality = None
        self._recent_batches = collections.deque(maxlen=math.ceil(STATISTICS_IMAGES / job.loop.spec.batch_size))

    def _losses(self, images, noise, training: bool):
        """(objective, summed squared error, KL) per batch; the VAE samples z only when training."""
        import tensorflow as tf

        from visionlake.evaluate.generative import kl_divergence

        code = self.autoencoder.encoder(images, training=training)
        if self.variational:
            z_mean, z_log_var = code
            z = z_mean + tf.exp(0.5 * z_log_var) * noise.normal(tf.shape(z_mean)) if training else z_mean
            kl = tf.reduce_mean(kl_divergence(z_mean, z_log_var))
        else:
            z, kl = code, tf.constant(0.0)
        reconstructed = self.autoencoder.decoder(z, training=training)
        squared_error = tf.reduce_mean(tf.reduce_sum(tf.square(images - reconstructed), axis=[1, 2, 3]))
        return squared_error + self.job.settings.autoencoder.kl_weight * kl, squared_error, kl

    def _make_step(self, noise):
        import tensorflow as tf

        model, optimizer, hvd = self.autoencoder.model, self.optimizers["autoencoder"], self.hvd

        @tf.function
        def step(images):
            with tf.GradientTape() as tape:
                loss, squared_error, kl = self._losses(images, noise, training=True)
            step_averaged(tape, loss, model.trainable_variables, optimizer, hvd)  # Horovod: averaged gradients
            return loss, squared_error, kl

        return step

    def train_step(self, images, labels) -> dict[str, Any]:
        loss, squared_error, kl = self._step(images)
        self._recent_batches.append(images)
        figures = {"loss": loss, "reconstruction": squared_error}
        return {**figures, "kl": kl} if self.variational else figures

    def finish_epoch(self) -> None:
        """Batch-norm statistics of the epoch's final weights over the rank's latest training batches, averaged over
        the ranks: validation, the quality figures and the registered model then normalise as training did."""
        import tensorflow as tf

        from visionlake.models.batch_norm import recompute_statistics

        if self._recent_batches:
            recompute_statistics(self.autoencoder.model, tf.concat(list(self._recent_batches), axis=0))
        average_over_ranks(self.autoencoder.model.non_trainable_variables, self.hvd)

    def validate(self, val) -> dict[str, float]:
        import numpy as np
        import tensorflow as tf

        from visionlake.lake.reader import open_images

        totals = np.zeros(2)
        with open_images(self.job.loop.spec, val, training=False) as batches:
            for images, _ in batches:
                loss, _, _ = self._losses(images, None, training=False)
                totals += [float(loss) * len(images), len(images)]
        loss_sum, count = self.hvd.allreduce(tf.constant(totals), op=self.hvd.Sum).numpy()  # Horovod: global sums
        return {"val_loss": loss_sum / count if count else float("nan")}

    def on_epoch_end_rank_zero(self, epoch: int, last: bool, client, run_id: str) -> dict[str, float]:
        from visionlake.evaluate.generative import ReconstructionQuality

        if not _quality_due(self.job, epoch, last):
            return {}
        seed = self.job.loop.rank_settings.seed
        if self._quality is None:
            self._quality = ReconstructionQuality.prepare(self.job.loop.spec, self.job.test_files,
                                                          self.job.settings.quality.samples, seed)
        if len(self._quality.test_images):
            _log_grid(client, run_id, self._quality.grid(self.autoencoder), epoch)
        return self._quality.evaluate(self.autoencoder)


def generative_rank(job: GenerativeJob) -> dict[str, Any]:
    """What every Horovod rank runs for a generative model."""
    hvd = init_rank(job.loop.rank_settings)
    task = GanTask(job, hvd) if job.settings.is_gan else AutoencoderTask(job, hvd)
    return run_loop(job.loop, task, hvd)


# ---- the driver side ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerativePlan(TrainingPlan):
    """A generative fit's training plan, with its config and the FCD judge (resolved before the run opens)."""
    config: Config
    judge: Optional[tracking.ModelRef]


@dataclass
class GenerativeFit:
    """A finished fit: the registrable model, all its networks with their weights, metrics and history."""
    model: Any
    networks: dict[str, Any]
    weights: NetworkWeights
    metrics: dict[str, float]
    history: list[dict[str, float]]
    results: list[dict[str, Any]]


def prepare_generative(spark: SparkSession, config: Config, labels: tuple[int, ...] = ()) -> GenerativePlan:
    """Checks the dataset, the tracking store and the FCD classifier, and shards the inputs (``labels``: only
    these labels, e.g. an anomaly detector's normal class)."""
    settings = config.generative
    dataset = open_dataset(spark, config)
    _check_geometry(dataset.manifest.image.shape)
    judge = _resolve_judge(settings, dataset.manifest.image.shape) if settings.is_gan else None
    training = plan_training(spark, config, dataset, batch_size=settings.batch_size,
                             max_steps=settings.max_steps_per_epoch, section="generative", scale="tanh",
                             labels=labels, reader=parquet_reader(config.train.reader))
    return GenerativePlan(**{f.name: getattr(training, f.name) for f in fields(TrainingPlan)}, config=config,
                          judge=judge)


def fit_generative(spark: SparkSession, plan: GenerativePlan, run_id: str) -> GenerativeFit:
    """Trains on the ranks inside the active MLflow run ``run_id``; logs params, tags and the loss curves."""
    import mlflow

    config, settings, shared = plan.config, plan.config.generative, plan.config.train
    if not shared.resume_run_id:
        tree = config.to_dict()
        mlflow.log_params(tracking.flatten({"generative": tree["generative"], "train.seed": shared.seed,
                                            "train.num_proc": plan.num_proc, "lake": tree["lake"]}))
        mlflow.set_tags({"job": "train_generative", **plan.dataset_tags(), "model.kind": settings.model, "model.num_classes": len(plan.label_names),
                         "model.trained_labels": ",".join(map(str, plan.spec.labels)) or "all",
                         "quality.classifier": plan.judge.uri if plan.judge else "none"})
    # A GAN with a judge registers the epoch with the lowest FCD against the training images (GAN training
    # oscillates: in two epochs the demo's test FCD went from 2.1x to 6.5x the floor); the others, the last epoch.
    selection = GAN_SELECTION if settings.is_gan and plan.judge else None
    job = GenerativeJob(loop=plan.loop(run_id, settings.epochs, selection=selection), settings=settings,
                        num_classes=len(plan.label_names), test_files=plan.inputs.test_files,
                        quality_train_files=plan.inputs.train_files, quality_val_files=plan.inputs.val_files,
                        judge_uri=plan.judge.uri if plan.judge else None)
    log.info("training %s on %s v%d: %d rank(s), %d step(s)/epoch of %d, %d epoch(s); run %s", settings.model,
             shared.dataset, plan.manifest.version, plan.num_proc, plan.inputs.steps, settings.batch_size,
             settings.epochs, run_id)
    results, history = train_on_ranks(spark, plan, generative_rank, job, run_id)
    networks = _load_networks(job, results[0]["best_weights"])
    _log_curves(history, settings)
    metrics = {**_final_metrics(run_id), **selected_figures(history, selection)}
    if selection:
        mlflow.log_metric("selected_epoch", metrics["selected_epoch"])
    return GenerativeFit(registered_network(settings, networks), networks, results[0]["best_weights"],
                         metrics, history, results)


def train_generative(spark: SparkSession, config: Config) -> GenerativeSummary:
    """Trains ``config.generative.model`` on ``config.train.dataset``; logs, registers and gates it.

    Raises:
        LakeError: the dataset has no committed version.
        TrackingError: the MLflow store is unusable, or the FCD classifier is not registered (checked first).
        ConfigError: the dataset's image shape does not suit the networks or the FCD classifier.
        TrainingError: a rank failed; the MLflow run is marked FAILED.
    """
    started = time.perf_counter()
    settings, shared = config.generative, config.train
    plan = prepare_generative(spark, config)
    registered = settings.registered_name()
    with tracking.tracked_run(plan.experiment_id, f"{settings.model}-{shared.dataset}", shared.resume_run_id) as run:
        run_id = run.info.run_id
        fit = fit_generative(spark, plan, run_id)
        version = tracking.log_keras_model(fit.model, registered)
        metric, higher = GATES[settings.model]
        gate = tracking.gate_and_promote(registered, version, metric, fit.metrics.get(metric),
                                         higher_is_better=higher)
    summary = GenerativeSummary(run_id=run_id, model_kind=settings.model, model_name=registered,
                                model_version=version, gate=gate, metrics=fit.metrics, history=fit.history,
                                seconds=time.perf_counter() - started,
                                rank_weight_digests=[r["weights_digest"] for r in fit.results],
                                rank_initial_digests=[r["initial_digest"] for r in fit.results])
    log.info("%s", summary.report())
    return summary


def _check_geometry(image_shape: tuple[int, int, int]) -> None:
    from visionlake.models.generative import geometry

    try:
        geometry(image_shape)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _resolve_judge(settings: GenerativeConfig, image_shape: tuple[int, int, int]) -> Optional[tracking.ModelRef]:
    """The FCD classifier, resolved to one version, whose input must match the dataset's images."""
    if not settings.quality.classifier:
        log.warning("generative.quality.classifier is empty: no FCD, and the gate promotes only a first version")
        return None
    judge = tracking.resolve_model(settings.quality.classifier, "generative.quality.classifier")
    expected = tracking.signature_shapes(judge)[0][0][1:]
    if tuple(expected) != tuple(image_shape):
        raise ConfigError(f"generative.quality.classifier {judge.uri} takes {tuple(expected)} images but the dataset "
                          f"has {image_shape}; train a classifier on this dataset first")
    return judge


def selected_figures(history: list[dict[str, float]], selection: Optional[tuple[str, str]]) -> dict[str, float]:
    """The figures of the epoch whose weights a run kept (the first best by ``selection``, as the rank loop chose it),
    with ``selected_epoch`` counted from 1; empty without a selection or when no epoch reported its figure."""
    if selection is None:
        return {}
    metric, mode = selection
    candidates = [record for record in history if metric in record and not math.isnan(record[metric])]
    if not candidates:
        return {}
    chosen = (max if mode == "max" else min)(candidates, key=lambda record: record[metric])
    return {**{k: v for k, v in chosen.items() if k != "epoch"}, "selected_epoch": chosen["epoch"] + 1.0}


def _final_metrics(run_id: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient().get_run(run_id).data.metrics)


def _load_networks(job: GenerativeJob, weights: NetworkWeights) -> dict[str, Any]:
    """The trained networks on the driver: generator and discriminator, or the autoencoder (encoder and decoder
    inside it, the registered form)."""
    from visionlake.models.generative import build_autoencoder, build_discriminator, build_generator

    shape, settings = job.loop.spec.image_shape, job.settings
    if settings.is_gan:
        classes = job.num_classes if settings.model == "cdcgan" else 0
        networks = {"generator": build_generator(shape, settings.gan, classes),
                    "discriminator": build_discriminator(shape, settings.gan, classes)}
        if settings.gan.average_decay:
            networks[AVERAGE_GENERATOR] = build_generator(shape, settings.gan, classes)
    else:
        networks = {"autoencoder": build_autoencoder(shape, settings.autoencoder, settings.model == "vae").model}
    load_weights(networks, with_average(weights) if AVERAGE_GENERATOR in networks else weights)
    return networks


def with_average(weights: NetworkWeights) -> NetworkWeights:
    """GAN weights with an averaged generator: the one trained, or the plain generator's for weights saved by a run
    started without averaging (then resumed with it)."""
    return {AVERAGE_GENERATOR: weights["generator"], **weights}


def _log_curves(history: list[dict[str, float]], settings: GenerativeConfig) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "loss_curves.png"
        plot_curves(history, path, LOSS_PANELS["gan" if settings.is_gan else "autoencoder"])
        mlflow.log_artifact(str(path), artifact_path="evaluation")


