"""Distributed classifier training: Horovod on Spark over the lake, tracked in MLflow, registered and gated.

The driver plans the shards, opens the MLflow run and hands every rank a ``RankJob``. Each rank trains on its own
files with averaged gradients; rank 0 alone checkpoints and logs. The driver then evaluates the best weights on the
test split, logs artifacts and the model, registers it and lets the gate decide about ``champion``.
"""
from __future__ import annotations

import hashlib
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
from visionlake.config import Config, ConfigError, TrainConfig
from visionlake.data import InputSpec, ShardPlan, open_images, plan_file_shards, split_file_rows
from visionlake.evaluation import confusion_matrix, per_class_report, plot_confusion_matrix, plot_curves
from visionlake.lake import Lake
from visionlake.launcher import RankSettings, default_num_proc, init_rank, run_on_ranks, threads_per_rank

log = logging.getLogger(__name__)

GATE_METRIC = "best_val_accuracy"


@dataclass(frozen=True)
class RankJob:
    """Everything a rank needs, decided on the driver (picklable)."""
    train: TrainConfig
    spec: InputSpec
    num_classes: int
    train_files: tuple[tuple[str, ...], ...]  # per rank
    val_files: tuple[tuple[str, ...], ...]
    steps_per_epoch: int
    tracking_uri: str
    run_id: str
    checkpoint_dir: str
    threads: int


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
def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def make_train_step(model, optimizer, hvd):
    """One optimisation step with gradients averaged over the ranks; returns (mean loss, correct count)."""
    import tensorflow as tf

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits)
        tape = hvd.DistributedGradientTape(tape)  # Horovod: allreduce-average the gradients
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
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


def train_rank(job: RankJob) -> dict[str, Any]:
    """The training loop every Horovod rank runs."""
    import tensorflow as tf

    from visionlake.models import build_classifier

    hvd = init_rank(RankSettings(job.train.seed, job.threads, job.train.mixed_precision))
    rank, size = hvd.rank(), hvd.size()
    model = build_classifier(job.train.model, job.spec.image_shape, job.num_classes)
    optimizer = tf.keras.optimizers.Adam(job.train.learning_rate)
    optimizer.build(model.trainable_variables)
    epoch = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, job.checkpoint_dir, max_to_keep=2)
    if rank == 0 and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()  # resume the interrupted run
    hvd.broadcast_variables(model.variables, root_rank=0)  # Horovod: every rank starts from rank 0's state
    hvd.broadcast_variables(optimizer.variables, root_rank=0)
    epoch.assign(hvd.broadcast(epoch, root_rank=0))
    first_epoch = int(epoch.numpy())
    mlflow_client = _rank_zero_client(job) if rank == 0 else None
    train_step = make_train_step(model, optimizer, hvd)
    plateau = Plateau(job.train)
    history, best_accuracy = [], -1.0
    if mlflow_client is not None and first_epoch > 0:  # resumed: the best weights so far came from earlier epochs
        best_accuracy = max((m.value for m in mlflow_client.get_metric_history(job.run_id, "val_accuracy")),
                            default=-1.0)
    best_weights = f"{job.checkpoint_dir}/best.weights.h5"
    with open_images(job.spec, job.train_files[rank], training=True, shard=(rank, size)) as train_batches:
        batches = iter(train_batches)
        for current in range(first_epoch, job.train.epochs):
            started, totals = time.perf_counter(), np.zeros(3)
            for step in range(job.steps_per_epoch):
                optimizer.learning_rate.assign(learning_rate_at(
                    current * job.steps_per_epoch + step, job.steps_per_epoch, job.train, size, plateau.decay))
                images, labels = next(batches)
                loss, correct = train_step(images, labels)
                totals += [float(loss) * len(labels), float(correct), len(labels)]
            # Horovod: average metrics and batch-norm statistics so every rank holds the same model and figures.
            loss_sum, correct, count = hvd.allreduce(tf.constant(totals), op=hvd.Sum).numpy()
            for variable in model.non_trainable_variables:
                variable.assign(hvd.allreduce(variable, op=hvd.Average))
            with open_images(job.spec, job.val_files[rank], training=False, shard=(rank, size)) as val_batches:
                val_loss, val_accuracy = _evaluate(model, val_batches, hvd)
            record = {"epoch": current, "loss": loss_sum / count, "accuracy": correct / count, "val_loss": val_loss,
                      "val_accuracy": val_accuracy, "learning_rate": float(optimizer.learning_rate.numpy()),
                      "images_per_s": count / (time.perf_counter() - started)}
            history.append(record)
            epoch.assign(current + 1)
            stop = plateau.update(val_loss)
            if rank == 0:  # Horovod: one writer for checkpoints and logs
                manager.save()
                if val_accuracy > best_accuracy:
                    best_accuracy = val_accuracy
                    model.save_weights(best_weights)
                for key, value in record.items():
                    if key != "epoch":
                        mlflow_client.log_metric(job.run_id, key, value, step=current)
                print(f"epoch {current}: " + ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"),
                      flush=True)
            if stop:
                break
    if rank == 0 and best_accuracy < 0:  # resumed after the last epoch: keep the restored weights
        model.save_weights(best_weights)
    return {"rank": rank, "history": history, "weights_digest": weights_digest(model), "best_weights": best_weights}


def _rank_zero_client(job: RankJob):
    from mlflow.tracking import MlflowClient

    return MlflowClient(job.tracking_uri)


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
    lake = Lake(spark, config.lake.root)
    manifest = lake.require_manifest(settings.dataset)
    experiment_id = tracking.connect(config.tracking)
    num_proc = default_num_proc(spark, settings.num_proc)
    image = manifest["image"]
    spec = InputSpec(image_shape=(image["height"], image["width"], image["channels"]),
                     batch_size=settings.batch_size, reader=settings.reader, shuffle_buffer=settings.shuffle_buffer,
                     seed=settings.seed, augment=settings.augment,
                     tfrecord_compression=manifest.get("tfrecord_compression", "none"))
    train_files, val_files, steps = _plan_inputs(lake, manifest, settings, num_proc)
    label_names = manifest["label_names"]
    with tracking.tracked_run(experiment_id, f"{settings.model}-{settings.dataset}", settings.resume_run_id) as run:
        run_id = run.info.run_id
        if not settings.resume_run_id:
            mlflow.log_params(tracking.flatten({"train": config.to_dict()["train"], "lake": config.to_dict()["lake"]}))
            mlflow.set_tags({"dataset": settings.dataset, "dataset.version": manifest["version"],
                             "dataset.digest": manifest["source"]["digest"], "dataset.run_id": manifest["run_id"],
                             "horovod.num_proc": num_proc, "model.architecture": settings.model})
        job = RankJob(train=settings, spec=spec, num_classes=len(label_names), train_files=train_files,
                      val_files=val_files, steps_per_epoch=steps, tracking_uri=config.tracking.tracking_uri,
                      run_id=run_id, checkpoint_dir=f"{settings.checkpoint_root}/{run_id}",
                      threads=threads_per_rank(spark.sparkContext.defaultParallelism, num_proc,
                                               settings.threads_per_rank))
        log.info("training %s on %s v%d: %d rank(s), %d step(s)/epoch of %d, up to %d epoch(s); run %s",
                 settings.model, settings.dataset, manifest["version"], num_proc, steps, settings.batch_size,
                 settings.epochs, run_id)
        results = sorted(run_on_ranks(spark, train_rank, (job,), num_proc), key=lambda r: r["rank"])
        history = _full_history(run_id, results[0]["history"])
        model = _load_model(settings, spec, len(label_names), results[0]["best_weights"])
        test_accuracy = _evaluate_and_log(model, lake, manifest, spec, history, label_names)
        best_val = max(h["val_accuracy"] for h in history)
        mlflow.log_metric(GATE_METRIC, best_val)
        version = _log_and_register(model, spec, settings.registered_model)
        gate = tracking.gate_and_promote(settings.registered_model, version, GATE_METRIC, best_val)
    summary = TrainSummary(run_id=run_id, model_name=settings.registered_model, model_version=version, gate=gate,
                           test_accuracy=test_accuracy, best_val_accuracy=best_val, history=history,
                           seconds=time.perf_counter() - started,
                           rank_weight_digests=[r["weights_digest"] for r in results])
    log.info("%s", summary.report())
    return summary


def _plan_inputs(lake: Lake, manifest: dict[str, Any], settings: TrainConfig, num_proc: int):
    if settings.reader == "tfrecord":
        base = manifest["tables"]["tfrecord"].rsplit("/tfrecord", 1)[0]
        files = {split: tuple(f"{base}/{f}" for f in manifest["tfrecord_files"].get(split, []))
                 for split in ("train", "val")}
        train_rows = sum(manifest["counts"].get("train", {}).values()) // num_proc
        train_plan = ShardPlan((files["train"],) * num_proc, (train_rows,) * num_proc)
        val_files = (files["val"],) * num_proc
    else:
        images = lake.read_table(manifest["dataset"], "images", manifest)
        try:
            train_plan = plan_file_shards(split_file_rows(images, "train"), num_proc)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        val_rows = split_file_rows(images, "val")
        # Validation is summed over ranks, so a rank may get no file when the split has fewer files than ranks.
        val_files = (plan_file_shards(val_rows, num_proc).files if len(val_rows) >= num_proc
                     else tuple(tuple(f for f, _ in val_rows[r::num_proc]) for r in range(num_proc)))
    steps = train_plan.steps_per_epoch(settings.batch_size)
    if settings.max_steps_per_epoch:
        steps = min(steps, settings.max_steps_per_epoch)
    if steps == 0:
        raise ConfigError(f"the train split of {manifest['dataset']!r} has too few images for {num_proc} rank(s) x "
                         f"batch {settings.batch_size}; lower train.batch_size or train.num_proc")
    return train_plan.files, val_files, steps


def _full_history(run_id: str, rank_zero_history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The run's per-epoch metrics from MLflow, so a resumed run's curves include the epochs before the restart."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    by_epoch: dict[int, dict[str, float]] = {}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        for metric in client.get_metric_history(run_id, key):
            by_epoch.setdefault(metric.step, {"epoch": metric.step})[key] = metric.value
    history = [by_epoch[e] for e in sorted(by_epoch) if len(by_epoch[e]) == 5]
    return history or rank_zero_history


def _load_model(settings: TrainConfig, spec: InputSpec, num_classes: int, weights: str):
    from visionlake.models import build_classifier

    model = build_classifier(settings.model, spec.image_shape, num_classes)
    model.load_weights(weights)
    return model


def predict_split(model, lake: Lake, manifest: dict[str, Any], spec: InputSpec, split: str):
    """(labels, predicted labels) of a whole split, read through the same input path as training."""
    images = lake.read_table(manifest["dataset"], "images", manifest)
    files = tuple(f for f, _ in split_file_rows(images, split))
    labels, predicted = [], []
    # These are the Parquet files, so they are read through petastorm whatever train.reader is.
    with open_images(replace(spec, reader="petastorm"), files, training=False) as batches:
        for batch_images, batch_labels in batches:
            labels.append(batch_labels.numpy())
            predicted.append(np.argmax(model(batch_images, training=False).numpy(), axis=-1))
    return (np.concatenate(labels), np.concatenate(predicted)) if labels else (np.array([]), np.array([]))


def _evaluate_and_log(model, lake: Lake, manifest, spec: InputSpec, history, label_names: list[str]) -> float:
    import mlflow

    labels, predicted = predict_split(model, lake, manifest, spec, "test")
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


def _log_and_register(model, spec: InputSpec, registered_name: str) -> str:
    """Logs a probabilities-out copy of the model with signature and example, registered under ``registered_name``."""
    import mlflow
    import tensorflow as tf
    from mlflow.models import infer_signature

    serving = tf.keras.Model(model.inputs, tf.keras.layers.Softmax(name="probabilities")(model.outputs[0]))
    example = np.zeros((2, *spec.image_shape), np.float32)
    signature = infer_signature(example, serving.predict(example, verbose=0))
    info = mlflow.tensorflow.log_model(serving, name="model", signature=signature, input_example=example,
                                       registered_model_name=registered_name)
    return str(info.registered_model_version)
