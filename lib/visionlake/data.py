"""The shared training input path: which lake files each rank reads, and the tf.data pipeline that reads them.

Sharding is planned on the driver: the split's Parquet files are sorted and balanced over the ranks by row count,
and every rank takes the same number of steps per epoch (the smallest shard's), so no rank waits at epoch end for
a collective the others never reach. Each rank then reads only its files through petastorm (or its ``shard`` of the
TFRecord records), decodes the PNGs, scales, augments, batches and prefetches.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, replace
from typing import Any, Iterator, Literal

from pyspark.sql import functions as F

from visionlake.config import AugmentConfig


@dataclass(frozen=True)
class ShardPlan:
    files: tuple[tuple[str, ...], ...]  # per rank
    rows: tuple[int, ...]

    def steps_per_epoch(self, batch_size: int) -> int:
        return min(self.rows) // batch_size if self.rows else 0


def plan_file_shards(file_rows: list[tuple[str, int]], num_shards: int) -> ShardPlan:
    """Balances files over shards by row count (largest first, ties by name): the same input gives the same plan."""
    if len(file_rows) < num_shards:
        raise ValueError(f"{len(file_rows)} Parquet file(s) cannot feed {num_shards} ranks; re-ingest with "
                         f"lake.write_partitions >= {num_shards} or train with fewer processes")
    files: list[list[str]] = [[] for _ in range(num_shards)]
    rows = [0] * num_shards
    for path, count in sorted(file_rows, key=lambda item: (-item[1], item[0])):
        target = rows.index(min(rows))
        files[target].append(path)
        rows[target] += count
    return ShardPlan(tuple(tuple(sorted(f)) for f in files), tuple(rows))


def split_file_rows(images, split: str, labels: tuple[int, ...] = ()) -> list[tuple[str, int]]:
    """(file URI, rows) of one split of an ``images`` DataFrame, counting only ``labels`` when given."""
    rows = images.filter(F.col("split") == split)
    if labels:
        rows = rows.filter(F.col("label").isin(list(labels)))
    counts = rows.groupBy(F.input_file_name().alias("file")).count().collect()
    return sorted((row["file"], row["count"]) for row in counts)


@dataclass(frozen=True)
class TrainingInputs:
    """The files every rank reads, planned once on the driver."""
    train_files: tuple[tuple[str, ...], ...]      # per rank
    val_files: tuple[tuple[str, ...], ...]        # per rank (validation is summed over the ranks)
    test_files: tuple[str, ...]                   # the whole test split (evaluated on one process)
    steps: int                                    # per epoch, the same on every rank
    synthetic_files: tuple[tuple[str, ...], ...] = ()
    synthetic_rows: int = 0
    synthetic_runs: tuple[str, ...] = ()

    def mix_tags(self, fraction: float) -> dict[str, str]:
        """What an MLflow run records about its real/synthetic mix."""
        return {"data.synthetic_fraction": str(fraction), "data.synthetic_rows": str(self.synthetic_rows),
                "data.synthetic_runs": ",".join(self.synthetic_runs) or "none"}


def _files_per_rank(file_rows: list[tuple[str, int]], num_proc: int) -> tuple[tuple[str, ...], ...]:
    """Balanced shards, or round-robin when there are fewer files than ranks (some ranks then read nothing)."""
    if len(file_rows) >= num_proc:
        return plan_file_shards(file_rows, num_proc).files
    return tuple(tuple(f for f, _ in file_rows[r::num_proc]) for r in range(num_proc))


def plan_inputs(lake, manifest: dict[str, Any], *, num_proc: int, batch_size: int, max_steps: int,
                reader: str = "petastorm", synthetic_fraction: float = 0.0, section: str = "train",
                labels: tuple[int, ...] = ()) -> TrainingInputs:
    """Shards the dataset's splits over ``num_proc`` ranks and sets the steps per epoch.

    With ``synthetic_fraction`` > 0, a (1 - fraction) share of each batch is real, so an epoch still passes over the
    real shard about once. ``section`` names the config section in error messages. ``labels`` restricts the
    planned rows to those labels (the reader must filter with the same ``InputSpec.labels``).

    Raises:
        ConfigError: too few files or images for the ranks and batch size, or no synthetic images to mix in.
    """
    from visionlake.config import ConfigError

    images = lake.read_table(manifest["dataset"], "images", manifest)
    test_files = tuple(f for f, _ in split_file_rows(images, "test", labels))
    if reader == "tfrecord":
        base = manifest["tables"]["tfrecord"].rsplit("/tfrecord", 1)[0]
        files = {split: tuple(f"{base}/{f}" for f in manifest["tfrecord_files"].get(split, []))
                 for split in ("train", "val")}
        train_rows = sum(manifest["counts"].get("train", {}).values()) // num_proc
        train_plan = ShardPlan((files["train"],) * num_proc, (train_rows,) * num_proc)
        val_files = (files["val"],) * num_proc
    else:
        try:
            train_plan = plan_file_shards(split_file_rows(images, "train", labels), num_proc)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        val_files = _files_per_rank(split_file_rows(images, "val", labels), num_proc)
    synthetic_files, synthetic_rows, synthetic_runs = (), 0, ()
    if synthetic_fraction > 0:
        synthetic = lake.read_table(manifest["dataset"], "synthetic", manifest)
        file_rows = split_file_rows(synthetic, "train")
        if not file_rows:
            raise ConfigError(f"{section}.synthetic_fraction={synthetic_fraction} but dataset "
                              f"{manifest['dataset']!r} has no synthetic images; run `visionlake generate` first "
                              f"or set {section}.synthetic_fraction=0")
        synthetic_files = _files_per_rank(file_rows, num_proc)
        synthetic_rows = sum(count for _, count in file_rows)
        synthetic_runs = tuple(sorted(manifest.get("synthetic", {}).get("live_runs", [])))
    real_per_batch = max(1, round(batch_size * (1.0 - synthetic_fraction)))
    steps = train_plan.steps_per_epoch(real_per_batch)
    if max_steps:
        steps = min(steps, max_steps)
    if steps == 0:
        raise ConfigError(f"the train split of {manifest['dataset']!r} has too few images for {num_proc} rank(s) x "
                          f"batch {batch_size}; lower {section}.batch_size or train.num_proc")
    return TrainingInputs(train_plan.files, val_files, test_files, steps, synthetic_files, synthetic_rows,
                          synthetic_runs)


@dataclass(frozen=True)
class InputSpec:
    image_shape: tuple[int, int, int]
    batch_size: int
    reader: Literal["petastorm", "tfrecord"] = "petastorm"
    scale: Literal["unit", "tanh"] = "unit"  # [0, 1] for classifiers, [-1, 1] for GANs
    shuffle_buffer: int = 2048
    seed: int = 0
    augment: AugmentConfig = AugmentConfig()
    tfrecord_compression: str = "none"
    labels: tuple[int, ...] = ()  # only these labels (e.g. the normal class of an anomaly detector); () = all


def _petastorm_url(uri: str) -> str:
    return "file:///" + uri[len("file:"):].lstrip("/") if uri.startswith("file:") else uri


@contextlib.contextmanager
def open_images(spec: InputSpec, files: tuple[str, ...], training: bool, shard: tuple[int, int] = (0, 1),
                synthetic_files: tuple[str, ...] = (), synthetic_fraction: float = 0.0) -> Iterator[Any]:
    """Yields a ``tf.data.Dataset`` of ``(images float32, labels int32)`` batches; closes its readers on exit.

    Args:
        files: Parquet files (petastorm: this rank's files) or TFRecord files (all of the split's).
        training: repeat forever, shuffle, augment and drop the last partial batch.
        shard: (index, count) of this rank among the TFRecord readers; Parquet files are sharded by the plan.
        synthetic_files, synthetic_fraction: training only: Parquet files of the ``synthetic`` table, drawn at
            random for this share of the examples (real and synthetic images then pass the same augmentation).
    """
    import tensorflow as tf

    with contextlib.ExitStack() as readers:
        encoded = _encoded_examples(spec, files, training, shard, readers)
        if training and synthetic_files and synthetic_fraction > 0:
            synthetic = _encoded_examples(replace(spec, reader="petastorm"), synthetic_files, True, shard, readers)
            encoded = tf.data.Dataset.sample_from_datasets(
                [encoded, synthetic], weights=[1.0 - synthetic_fraction, synthetic_fraction], seed=spec.seed)
        yield _batches(encoded, spec, training)


def _encoded_examples(spec: InputSpec, files: tuple[str, ...], training: bool, shard: tuple[int, int],
                      readers: contextlib.ExitStack):
    """(PNG bytes, label) pairs from the files; a petastorm reader is registered with ``readers`` to be closed."""
    import tensorflow as tf

    if not files:
        return tf.data.Dataset.from_tensor_slices((tf.constant([], tf.string), tf.constant([], tf.int32)))
    if spec.reader == "petastorm":
        from petastorm.tf_utils import make_petastorm_dataset

        reader = open_batch_reader([_petastorm_url(f) for f in files], schema_fields=["image", "label"],
                                   num_epochs=None if training else 1, shuffle_row_groups=training,
                                   seed=spec.seed, workers_count=2)
        readers.callback(_close_reader, reader)
        return make_petastorm_dataset(reader).unbatch().map(lambda row: (row.image, tf.cast(row.label, tf.int32)))
    from visionlake.tfrecord import tfrecord_examples

    examples = tfrecord_examples(list(files), spec.tfrecord_compression).shard(shard[1], shard[0])
    encoded = examples.map(lambda example: (example["image/encoded"], tf.cast(example["label"], tf.int32)))
    return encoded.repeat() if training else encoded


def open_batch_reader(*args, **kwargs):
    """``petastorm.make_batch_reader`` with its one-epoch end-of-data race fixed (see below)."""
    from petastorm import make_batch_reader

    # petastorm 0.13 uses pyarrow's legacy dataset API, which the pinned pyarrow 14 deprecates on every read.
    warnings.filterwarnings("ignore", category=FutureWarning, module="petastorm")
    warnings.filterwarnings("ignore", message="schema_fields behavior has changed", module="petastorm")
    _wait_for_ventilation_before_counting()
    return make_batch_reader(*args, **kwargs)


def _wait_for_ventilation_before_counting() -> None:
    """Makes petastorm's thread pool ask "has the ventilator finished?" before it compares its work counters.

    petastorm 0.13.1 asks in the other order: it sees no work handed out yet, the ventilator then hands out every
    row group and finishes, and the pool concludes that all work is done. A ``num_epochs=1`` reader then ends
    before its first row (about 1 read in 40 on a small table, measured). Once the ventilator has finished, the
    counters are final, so asking it first makes the end-of-data check exact. Idempotent.
    """
    from petastorm.workers_pool.thread_pool import ThreadPool

    if getattr(ThreadPool.all_workers_done, "waits_for_ventilation", False):
        return
    counters_done = ThreadPool.all_workers_done

    def all_workers_done(pool) -> bool:
        ventilation_finished = pool._ventilator is None or pool._ventilator.completed()
        return ventilation_finished and counters_done(pool)

    all_workers_done.waits_for_ventilation = True
    ThreadPool.all_workers_done = all_workers_done


def _close_reader(reader) -> None:
    reader.stop()
    reader.join()


def _batches(encoded, spec: InputSpec, training: bool):
    import tensorflow as tf

    def decode(encoded, label):
        image = tf.cast(decode_lake_image(encoded, spec.image_shape), tf.float32) / 255.0
        return image, tf.cast(label, tf.int32)

    def augment(image, label):
        return augment_image(image, spec.augment), label

    def rescale(image, label):
        return (image * 2.0 - 1.0 if spec.scale == "tanh" else image), label

    dataset = encoded
    if spec.labels:
        wanted = tf.constant(spec.labels, tf.int32)
        dataset = dataset.filter(lambda png, label: tf.reduce_any(tf.equal(label, wanted)))
    if training and spec.shuffle_buffer:
        dataset = dataset.shuffle(spec.shuffle_buffer, seed=spec.seed)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if training and spec.augment.enabled:
        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(rescale, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(spec.batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def decode_lake_image(encoded, image_shape: tuple[int, int, int]):
    """TF op: one stored lake image (PNG or JPEG, whatever the dataset's codec) -> a uint8 tensor of its shape."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=image_shape[2], expand_animations=False)
    return tf.ensure_shape(image, image_shape)


def augment_image(image, settings: AugmentConfig):
    """Online augmentation of one [0, 1] image: flip, crop-and-resize, brightness, contrast (each from config)."""
    import tensorflow as tf

    height, width = image.shape[0], image.shape[1]
    if settings.flip:
        image = tf.image.random_flip_left_right(image)
    if settings.crop_fraction < 1.0:
        # A random share in [crop_fraction, 1] of each side: identity included, so objects are not always enlarged.
        fraction = tf.random.uniform([], settings.crop_fraction, 1.0)
        crop_height = tf.cast(tf.math.round(fraction * height), tf.int32)
        crop_width = tf.cast(tf.math.round(fraction * width), tf.int32)
        image = tf.image.random_crop(image, tf.stack([crop_height, crop_width, image.shape[2]]))
        image = tf.image.resize(image, (height, width))
    if settings.brightness:
        image = tf.image.random_brightness(image, settings.brightness)
    if settings.contrast:
        image = tf.image.random_contrast(image, 1.0 - settings.contrast, 1.0 + settings.contrast)
    return tf.clip_by_value(image, 0.0, 1.0)
