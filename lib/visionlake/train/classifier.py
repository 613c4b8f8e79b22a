"""Distributed classifier training: Horovod on Spark over the lake, tracked in MLflow, registered and gated.

The driver plans the shards, opens the MLflow run and hands every rank a ``RankJob``. Each rank trains on its own
files with averaged gradients; rank 0 alone checkpoints and logs. The driver then evaluates the best weights on the
test split, logs artifacts and the model, registers it and lets the gate decide about ``champion``.
"""
from __future__ import annotations

import math
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import SparkSession

from visionlake import tracking
from visionlake.config import Config, TrainConfig
from visionlake.lake.reader import InputSpec, open_images
from visionlake.evaluate.classification import confusion_matrix, per_class_report, plot_confusion_matrix, plot_curves
from visionlake.train.driver import open_dataset, plan_training, train_on_ranks
from visionlake.train.launcher import init_rank
from visionlake.train.checkpoints import NetworkWeights, load_weights
from visionlake.train.loop import LoopJob, RankTask, run_loop, step_averaged
from visionlake.lake.shards import RankShard, whole

log = logging.getLogger(__name__)

GATE_METRIC = "best_val_accuracy"


@dataclass(frozen=True)
class RankJob:
    """Everything a rank needs, decided on the driver (picklable)."""
    loop: LoopJob
    train: TrainConfig
    num_classes: int


@dataclass
class TrainSummary:
    run_id: str
    model_name: str
    model_version: str
    gate: dict[str, Any]
    test_accuracy: float
    best_val_accuracy: float
    history: list[dict[str, float]]
    seconds: float
    rank_weight_digests: list[str] = field(default_factory=list)

    def report(self) -> str:
        last = self.history[-1] if self.history else {}
        return "\n".join([
            f"trained run {self.run_id} in {self.seconds:.0f}s: {len(self.history)} epoch(s), final loss "
            f"{last.get('loss', float('nan')):.4f}, best val accuracy {self.best_val_accuracy:.4f}, "
            f"test accuracy {self.test_accuracy:.4f}",
            f"  registered {self.model_name} version {self.model_version}: {self.gate['gate.decision']} "
            f"(champion's {self.gate['gate.metric']} {self.gate['gate.champion_value']})",
        ])


# ---- pure schedule logic ------------------------------------------------------------------------------------------
def learning_rate_at(step: int, steps_per_epoch: int, settings: TrainConfig, ranks: int, decay: float) -> float:
    """Linear warm-up from the single-rank rate to the rate scaled by the number of ranks; then either that rate
    times the plateau ``decay``, or a cosine decay to zero over the remaining epochs."""
    target = settings.learning_rate * (ranks if settings.scale_lr_by_ranks else 1)
    warmup_steps = settings.warmup_epochs * steps_per_epoch
    if warmup_steps and step < warmup_steps:
        return settings.learning_rate + (target - settings.learning_rate) * (step + 1) / warmup_steps
    if settings.lr_schedule == "cosine":
        total = settings.epochs * steps_per_epoch
        progress = min(1.0, (step - warmup_steps) / max(1.0, total - warmup_steps))
        return target * 0.5 * (1.0 + math.cos(math.pi * progress))
    return target * decay


@dataclass
class Plateau:
    """Learning-rate decay on a validation-loss plateau and early stopping on no improvement."""
    settings: TrainConfig
    best_loss: float = float("inf")
    epochs_without_improvement: int = 0
    decay: float = 1.0

    def update(self, val_loss: float) -> bool:
        """Records an epoch's validation loss; returns True when training should stop."""
        if val_loss < self.best_loss - 1e-6:
            self.best_loss, self.epochs_without_improvement = val_loss, 0
            return False
        self.epochs_without_improvement += 1
        if self.epochs_without_improvement % self.settings.lr_patience == 0:
            self.decay *= self.settings.lr_decay_factor
        return self.epochs_without_improvement >= self.settings.early_stopping_patience


# ---- the rank side ------------------------------------------------------------------------------------------------
def make_train_step(model, optimizer, hvd):
    """One optimisation step with gradients averaged over the ranks; returns (mean loss, correct count)."""
    import tensorflow as tf

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits)
        step_averaged(tape, loss, model.trainable_variables, optimizer, hvd)  # Horovod: averaged gradients
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return loss, tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))

    return train_step


def _evaluate(model, dataset, hvd) -> tuple[float, float]:
    """(loss, accuracy) over every rank's validation shard, summed across ranks."""
    import tensorflow as tf

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    totals = np.zeros(3)
    for images, labels in dataset:
        logits = model(images, training=False)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        totals += [float(loss_fn(labels, logits)), float(tf.reduce_sum(tf.cast(predicted == labels, tf.float32))),
                   float(len(labels))]
    loss_sum, correct, count = hvd.allreduce(tf.constant(totals), op=hvd.Sum).numpy()  # Horovod: global sums
    return (loss_sum / count, correct / count) if count else (float("nan"), float("nan"))


class ClassifierTask(RankTask):
    """Cross-entropy with a warm-up/plateau or cosine learning rate, validated every epoch, early stopping."""

    def __init__(self, job: RankJob, hvd):
        import tensorflow as tf

        from visionlake.models.classifier import build_classifier

        self.job, self.hvd = job, hvd
        self.model = build_classifier(job.train.model, job.loop.spec.image_shape, job.num_classes)
        self.optimizer = tf.keras.optimizers.Adam(job.train.learning_rate)
        self.networks, self.optimizers = {"model": self.model}, {"model": self.optimizer}
        self._step = make_train_step(self.model, self.optimizer, hvd)
        self.plateau = Plateau(job.train)

    def before_step(self, global_step: int) -> None:
        self.optimizer.learning_rate.assign(learning_rate_at(
            global_step, self.job.loop.steps_per_epoch, self.job.train, self.hvd.size(), self.plateau.decay))

    def train_step(self, images, labels) -> dict[str, Any]:
        loss, correct = self._step(images, labels)
        return {"loss": loss, "accuracy": float(correct) / len(labels)}

    def validate(self, val: RankShard) -> dict[str, float]:
        with open_images(self.job.loop.spec, val, training=False) as batches:
            val_loss, val_accuracy = _evaluate(self.model, batches, self.hvd)
        return {"val_loss": val_loss, "val_accuracy": val_accuracy}

    def epoch_figures(self) -> dict[str, float]:
        return {"learning_rate": float(self.optimizer.learning_rate.numpy())}

    def should_stop(self, record: dict[str, float]) -> bool:
        return self.plateau.update(record["val_loss"])


def train_rank(job: RankJob) -> dict[str, Any]:
    """What every Horovod rank runs for a classifier."""
    hvd = init_rank(job.loop.rank_settings)
    return run_loop(job.loop, ClassifierTask(job, hvd), hvd)


# ---- the driver side ----------------------------------------------------------------------------------------------
def train_classifier(spark: SparkSession, config: Config) -> TrainSummary:
    """Trains, evaluates, logs, registers and gates a classifier on ``config.train.dataset``.

    Raises:
        LakeError: the dataset has no committed version.
        TrackingError: the MLflow store is unusable (checked before any training).
        TrainingError: a rank failed; the MLflow run is marked FAILED.
    """
    import mlflow

    started = time.perf_counter()
    settings = config.train
    plan = plan_training(spark, config, open_dataset(spark, config), batch_size=settings.batch_size,
                         max_steps=settings.max_steps_per_epoch, section="train", reader=settings.reader,
                         augment=settings.augment, synthetic_fraction=settings.synthetic_fraction)
    label_names = plan.label_names
    with tracking.tracked_run(plan.experiment_id, f"{settings.model}-{settings.dataset}",
                              settings.resume_run_id) as run:
        run_id = run.info.run_id
        if not settings.resume_run_id:
            mlflow.log_params(tracking.flatten({"train": config.to_dict()["train"], "lake": config.to_dict()["lake"]}))
            mlflow.set_tags({"job": "train_classifier", "model.architecture": settings.model, **plan.dataset_tags(),
                             **plan.inputs.mix_tags(settings.synthetic_fraction)})
        loop = plan.loop(run_id, settings.epochs, selection=("val_accuracy", "max"), synthetic=plan.inputs.synthetic,
                         synthetic_fraction=settings.synthetic_fraction)
        job = RankJob(loop=loop, train=settings, num_classes=len(label_names))
        log.info("training %s on %s v%d: %d rank(s), %d step(s)/epoch of %d, up to %d epoch(s); run %s",
                 settings.model, settings.dataset, plan.manifest.version, plan.num_proc, plan.inputs.steps,
                 settings.batch_size, settings.epochs, run_id)
        results, history = train_on_ranks(spark, plan, train_rank, job, run_id)
        model = _load_model(settings, plan.spec, len(label_names), results[0]["best_weights"])
        test_accuracy = _evaluate_and_log(model, plan.inputs.test_files, plan.spec, history, label_names)
        best_val = max(h["val_accuracy"] for h in history)
        mlflow.log_metric(GATE_METRIC, best_val)
        version = tracking.log_keras_model(_serving(model), settings.registered_model)
        gate = tracking.gate_and_promote(settings.registered_model, version, GATE_METRIC, best_val)
    summary = TrainSummary(run_id=run_id, model_name=settings.registered_model, model_version=version, gate=gate,
                           test_accuracy=test_accuracy, best_val_accuracy=best_val, history=history,
                           seconds=time.perf_counter() - started,
                           rank_weight_digests=[r["weights_digest"] for r in results])
    log.info("%s", summary.report())
    return summary


def _load_model(settings: TrainConfig, spec: InputSpec, num_classes: int, weights: NetworkWeights):
    from visionlake.models.classifier import build_classifier

    model = build_classifier(settings.model, spec.image_shape, num_classes)
    load_weights({"model": model}, weights)
    return model


def predict_split(model, test_files: tuple[str, ...], spec: InputSpec):
    """(labels, predicted labels) of a split's Parquet files, read through the same input path as training."""
    labels, predicted = [], []
    # These are the Parquet files: a TFRecord-trained spec reads them through petastorm.
    with open_images(replace(spec, reader=spec.parquet_reader), whole(test_files), training=False) as batches:
        for batch_images, batch_labels in batches:
            labels.append(batch_labels.numpy())
            predicted.append(np.argmax(model(batch_images, training=False).numpy(), axis=-1))
    return (np.concatenate(labels), np.concatenate(predicted)) if labels else (np.array([]), np.array([]))


def _evaluate_and_log(model, test_files: tuple[str, ...], spec: InputSpec, history, label_names: list[str]) -> float:
    import mlflow

    labels, predicted = predict_split(model, test_files, spec)
    accuracy = float((labels == predicted).mean()) if len(labels) else float("nan")
    matrix = confusion_matrix(labels, predicted, len(label_names))
    mlflow.log_metric("test_accuracy", accuracy)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        plot_curves(history, folder / "training_curves.png")
        plot_confusion_matrix(matrix, label_names, folder / "confusion_matrix.png")
        (folder / "per_class_test.json").write_text(json.dumps(per_class_report(matrix, label_names), indent=2))
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    return accuracy


def _serving(model):
    """The registered form: the classifier with a softmax on its logits (its "features" layer stays inside)."""
    import tensorflow as tf

    return tf.keras.Model(model.inputs, tf.keras.layers.Softmax(name="probabilities")(model.outputs[0]))
