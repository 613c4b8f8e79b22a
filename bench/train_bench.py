"""Training benchmark on the shared MNIST set: input pipeline, Horovod scaling, and classifier quality.

    python bench/train_bench.py                 # all 70,000 images (make bench-train)
    python bench/train_bench.py --limit 6000 --epochs 1

1. Input pipeline: training images/s of one process reading the lake through petastorm vs the same model fed from
   an in-memory NumPy array (the upper bound). Target ratio >= 0.9.
2. Horovod: training images/s with 2 ranks x 1 thread vs 1 rank x 2 threads on this 2-core machine.
3. Quality: the small ResNet trained with the full job (2 ranks), test accuracy and wall time. Target >= 99.3%.
The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import cloudpickle
import numpy as np

from _common import archive_available, mnist_config, sample_archive, workspace
from visionlake.operate.cli import configure_logging
from visionlake.lake.reader import InputSpec, open_images
from visionlake.lake.shards import RankShard, plan_shards, read_row_group_stats, whole
from visionlake.ingest.job import ingest
from visionlake.lake.store import Lake
from visionlake.train.launcher import RankSettings, init_rank, run_on_ranks
from visionlake.spark import spark_session
from visionlake.train.classifier import make_train_step, train_classifier

cloudpickle.register_pickle_by_value(sys.modules[__name__])
BATCH = 128


def timed_steps(model_name: str, batches, steps: int, hvd) -> float:
    """Images/s of ``steps`` training steps after 5 warm-up steps."""
    import tensorflow as tf

    from visionlake.models.classifier import build_classifier

    model = build_classifier(model_name, (28, 28, 1), 10)
    step = make_train_step(model, tf.keras.optimizers.Adam(1e-3), hvd)
    iterator = iter(batches)
    for _ in range(5):
        step(*next(iterator))
    started = time.perf_counter()
    for _ in range(steps):
        step(*next(iterator))
    return steps * BATCH / (time.perf_counter() - started)


def input_pipeline_rank(spec: InputSpec, files: tuple[str, ...], steps: int, threads: int) -> dict:
    import tensorflow as tf

    hvd = init_rank(RankSettings(seed=1, threads=threads))
    with open_images(spec, whole(files), training=True) as batches:
        lake_rate = timed_steps("lenet", batches, steps, hvd)
    arrays, labels = [], []
    with open_images(spec, whole(files), training=False) as batches:
        for images, batch_labels in batches:
            arrays.append(images.numpy())
            labels.append(batch_labels.numpy())
    memory = (tf.data.Dataset.from_tensor_slices((np.concatenate(arrays), np.concatenate(labels)))
              .shuffle(spec.shuffle_buffer, seed=1).repeat().batch(BATCH, drop_remainder=True).prefetch(2))
    return {"lake": lake_rate, "memory": timed_steps("lenet", memory, steps, hvd)}


def scaling_rank(spec: InputSpec, shards: tuple[RankShard, ...], steps: int, threads: int) -> float:
    hvd = init_rank(RankSettings(seed=1, threads=threads))
    with open_images(spec, shards[hvd.rank()], training=True) as batches:
        return timed_steps("lenet", batches, steps, hvd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use N images instead of all 70,000")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the quality run")
    parser.add_argument("--steps", type=int, default=150, help="timed steps per throughput measurement")
    args = parser.parse_args()
    configure_logging()
    if not archive_available():
        return 0
    with workspace("vl-train-bench-") as work:
        source = sample_archive(args.limit, work / "sample.tar.gz")
        config = mnist_config(
            work, source, "train.model=resnet_small", f"train.epochs={args.epochs}", "train.batch_size=64",
            "train.learning_rate=0.001", "train.warmup_epochs=1", "train.lr_schedule=cosine",
            "train.early_stopping_patience=100")
        with spark_session(config.spark) as spark:
            spark.sparkContext.setLogLevel("ERROR")
            ingest(spark, config)
            lake = Lake(spark, config.lake.root)
            all_files = tuple(lake.table_files("mnist", "images", "train", lake.read_manifest("mnist")))
            spec = InputSpec(image_shape=(28, 28, 1), batch_size=BATCH, seed=1, codec="png")
            pipeline = run_on_ranks(spark, input_pipeline_rank, (spec, all_files, args.steps, 2), 1)[0]
            shards = plan_shards(read_row_group_stats(spark, list(all_files), 2), 2).shards
            two_ranks = sum(run_on_ranks(spark, scaling_rank, (spec, shards, args.steps, 1), 2))
            one_rank = run_on_ranks(spark, scaling_rank, (spec, (whole(all_files),), args.steps, 2), 1)[0]
            started = time.perf_counter()
            summary = train_classifier(spark, config)
            quality_seconds = time.perf_counter() - started
        result = {
            "images": args.limit or 70000, "batch": BATCH,
            "petastorm_images_per_s": round(pipeline["lake"]), "in_memory_images_per_s": round(pipeline["memory"]),
            "input_ratio": round(pipeline["lake"] / pipeline["memory"], 3),
            "two_ranks_one_thread_images_per_s": round(two_ranks), "one_rank_two_threads_images_per_s": round(one_rank),
            "scaling_efficiency": round(two_ranks / one_rank, 3),
            "resnet_small_test_accuracy": round(summary.test_accuracy, 4),
            "resnet_small_best_val_accuracy": round(summary.best_val_accuracy, 4),
            "resnet_small_epochs": len(summary.history), "resnet_small_wall_seconds": round(quality_seconds),
        }
        print(f"input pipeline: petastorm {result['petastorm_images_per_s']} img/s vs in-memory "
              f"{result['in_memory_images_per_s']} img/s = {result['input_ratio']:.2f} (target >= 0.9)")
        print(f"Horovod: 2 ranks x 1 thread {result['two_ranks_one_thread_images_per_s']} img/s vs 1 rank x 2 threads "
              f"{result['one_rank_two_threads_images_per_s']} img/s = {result['scaling_efficiency']:.2f}")
        print(f"quality: small ResNet test accuracy {summary.test_accuracy:.4f} (target >= 0.993) after "
              f"{len(summary.history)} epoch(s), {quality_seconds:.0f}s")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
