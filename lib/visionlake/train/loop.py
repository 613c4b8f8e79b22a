"""The one distributed training loop every model runs on a Horovod rank: classifier, GANs, VAE and autoencoder.

A model contributes a ``RankTask`` (its networks, optimizers and one training step); the loop owns everything
else: checkpoint restore and the rank-0 broadcast, the shared input pipeline, epoch metrics averaged over the ranks,
batch-norm statistics averaged so every rank ends with the same weights, rank-0 checkpoints, MLflow metrics and
best-weights selection, early stopping and the per-rank weight digests the tests compare.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from visionlake.train.checkpoints import CheckpointStore, NetworkWeights, snapshot_weights
from visionlake.lake.reader import InputSpec, open_images
from visionlake.console import rank_line
from visionlake.progress import STEP_REPORT_SECONDS, step_report
from visionlake.train.launcher import RankSettings
from visionlake.lake.shards import RankShard


@dataclass(frozen=True)
class LoopJob:
    """The model-independent part of a rank's job, decided on the driver (picklable)."""
    rank_settings: RankSettings
    spec: InputSpec
    epochs: int
    steps_per_epoch: int
    train: tuple[RankShard, ...]  # per rank
    val: tuple[RankShard, ...]    # per rank
    tracking_uri: str
    run_id: str
    checkpoint_uri: str  # this run's folder on the lake's file system (any URI pyarrow reaches)
    # ("val_accuracy", "max") keeps the weights of the best epoch of those that report the figure; None, the last's.
    selection: Optional[tuple[str, str]] = None
    synthetic: tuple[RankShard, ...] = ()  # per rank, mixed into training batches
    synthetic_fraction: float = 0.0


class RankTask:
    """What a model adds to the loop. ``train_step`` returns batch-mean metrics as scalars."""

    networks: dict[str, Any]
    optimizers: dict[str, Any]  # keyed by the network each one trains

    def before_step(self, global_step: int) -> None:
        """E.g. a learning-rate schedule."""

    def train_step(self, images, labels) -> dict[str, Any]:
        raise NotImplementedError

    def finish_epoch(self) -> None:
        """Collective (every rank calls it), after the epoch's steps and before validation: e.g. batch-norm
        statistics recomputed for the weights the epoch ended with."""

    def validate(self, val: RankShard) -> dict[str, float]:
        """Collective (every rank calls it): metrics over all ranks' validation shards."""
        return {}

    def epoch_figures(self) -> dict[str, float]:
        """Extra per-epoch figures, e.g. the learning rate."""
        return {}

    def after_restore(self) -> None:
        """Rank 0, after a resumed run's checkpoint is restored and before it is broadcast to the other ranks."""

    def should_stop(self, record: dict[str, float]) -> bool:
        """Must depend only on rank-averaged figures so all ranks stop together."""
        return False

    def on_epoch_end_rank_zero(self, epoch: int, last: bool, client, run_id: str) -> dict[str, float]:
        """Rank 0 only, after the epoch is logged: quality metrics and artifacts; returns metrics to log."""
        return {}


def step_averaged(tape, loss, variables, optimizer, hvd) -> None:
    """One optimizer step on ``variables`` with the gradients of ``loss`` averaged over the ranks: the distributed
    step every trainer takes (call it inside the trainer's ``tf.function``)."""
    tape = hvd.DistributedGradientTape(tape)  # Horovod: allreduce-average the gradients over the ranks
    gradients = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(gradients, variables))


def average_over_ranks(variables, hvd) -> None:
    """Sets each variable to its mean over the ranks (Horovod allreduce); collective."""
    for variable in variables:
        variable.assign(hvd.allreduce(variable, op=hvd.Average))


def weights_digest(*models) -> str:
    digest = hashlib.sha256()
    for model in models:
        for weights in model.get_weights():
            digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def improved(value: float, best: Optional[float], mode: str) -> bool:
    """Whether ``value`` beats ``best``; a NaN figure (e.g. an empty validation split) keeps the latest weights."""
    if math.isnan(value) or best is None or math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


def run_loop(job: LoopJob, task: RankTask, hvd) -> dict[str, Any]:
    """Trains ``task`` for the job's epochs on this rank; returns the rank's history and digests, and on rank 0 the
    selected weights as arrays (``best_weights``): they reach the driver through Spark, never as a path on this
    node's disk."""
    import tensorflow as tf

    rank = hvd.rank()
    for name, optimizer in task.optimizers.items():
        optimizer.build(task.networks[name].trainable_variables)  # so its slots exist to restore and broadcast
    epoch = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(epoch=epoch, **task.networks,
                                     **{f"{name}_optimizer": opt for name, opt in task.optimizers.items()})
    store = CheckpointStore(job.checkpoint_uri) if rank == 0 else None
    if store is not None:
        if store.restore(checkpoint):  # resume the interrupted run, if it has a checkpoint
            task.after_restore()
    for variables in [n.variables for n in task.networks.values()] + [o.variables for o in task.optimizers.values()]:
        hvd.broadcast_variables(variables, root_rank=0)  # Horovod: every rank starts from rank 0's state
    epoch.assign(hvd.broadcast(epoch, root_rank=0))
    first_epoch = int(epoch.numpy())
    initial_digest = weights_digest(*task.networks.values())
    client = _mlflow_client(job.tracking_uri) if rank == 0 else None
    best = _best_so_far(client, job) if client is not None and first_epoch > 0 else None
    best_weights: Optional[NetworkWeights] = store.load_best() if store is not None and first_epoch > 0 else None
    history: list[dict[str, float]] = []
    with open_images(job.spec, job.train[rank], training=True,
                     synthetic=job.synthetic[rank] if job.synthetic else None,
                     synthetic_fraction=job.synthetic_fraction) as train_batches:
        batches = iter(train_batches)
        next_report = 0.0
        for current in range(first_epoch, job.epochs):
            started, sums, count = time.perf_counter(), {}, 0
            for step in range(job.steps_per_epoch):
                global_step = current * job.steps_per_epoch + step
                task.before_step(global_step)
                images, labels = next(batches)
                for key, value in task.train_step(images, labels).items():
                    sums[key] = sums.get(key, 0.0) + float(value) * len(labels)
                count += len(labels)
                if rank == 0 and time.monotonic() >= next_report:  # the driver's step bar (on a terminal)
                    rank_line(step_report(global_step + 1, job.epochs * job.steps_per_epoch, current + 1, job.epochs))
                    next_report = time.monotonic() + STEP_REPORT_SECONDS
            keys = sorted(sums)
            # Horovod: sum metrics over ranks, and average batch-norm statistics so all ranks hold one model.
            totals = hvd.allreduce(tf.constant([sums[k] for k in keys] + [count], tf.float64), op=hvd.Sum).numpy()
            for network in task.networks.values():
                average_over_ranks(network.non_trainable_variables, hvd)
            task.finish_epoch()
            record = {key: totals[i] / totals[-1] for i, key in enumerate(keys)}
            record["images_per_s"] = totals[-1] / (time.perf_counter() - started)
            record.update(task.validate(job.val[rank]))
            record.update(task.epoch_figures())
            epoch.assign(current + 1)
            stop = task.should_stop(record)
            last = stop or current == job.epochs - 1
            if rank == 0:  # Horovod: one writer for checkpoints and logs
                # Quality first: a generative run selects on a figure only these epochs have (train_fcd).
                record.update(task.on_epoch_end_rank_zero(current, last, client, job.run_id))
                if job.selection is None or (job.selection[0] in record
                                             and improved(record[job.selection[0]], best, job.selection[1])):
                    best = record[job.selection[0]] if job.selection else None
                    best_weights = snapshot_weights(task.networks)
                    store.save_best(best_weights)
                store.save(checkpoint, current + 1)
                log_epoch(client, job.run_id, record, current)
                rank_line(f"epoch {current + 1}/{job.epochs}: "
                          + ", ".join(f"{k}={v:.4g}" for k, v in sorted(record.items())))
            history.append({"epoch": current, **record})
            if stop:
                break
        # Drop the iterator while its reader still runs (torn down after the reader stopped, its prefetch thread can
        # sit in a call to the stopped reader), and on a thread of its own: torn down on this one, it held both
        # demo ranks in `del` for ~50 s after their last epoch in 3 of 6 runs, with petastorm's workers idle.
        owner = [batches]
        del batches
        release_in_background(owner)
    if rank == 0 and best_weights is None:  # resumed after the last epoch, with no best weights kept
        best_weights = snapshot_weights(task.networks)
    return {"rank": rank, "history": history, "initial_digest": initial_digest,
            "weights_digest": weights_digest(*task.networks.values()), "best_weights": best_weights}


def release_in_background(owner: list) -> None:
    """Drops the references in ``owner`` on a daemon thread that nothing waits for (the caller keeps none)."""
    threading.Thread(target=owner.clear, name="release-input", daemon=True).start()


def log_epoch(client, run_id: str, record: dict[str, float], epoch: int) -> None:
    """An epoch's figures in one call (one store transaction, not one per figure: 50 GAN epochs made ~500)."""
    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), timestamp, epoch) for key, value in record.items()])


def _mlflow_client(tracking_uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)  # rank 0 also loads registered models (e.g. the FCD classifier)
    return MlflowClient(tracking_uri)


def _best_so_far(client, job: LoopJob) -> Optional[float]:
    """A resumed run's best selection figure so far, from MLflow (that epoch's weights are in the checkpoint store)."""
    if job.selection is None:
        return None
    values = [m.value for m in client.get_metric_history(job.run_id, job.selection[0]) if not math.isnan(m.value)]
    if not values:
        return None
    return max(values) if job.selection[1] == "max" else min(values)
