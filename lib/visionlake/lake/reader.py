"""The shared training input path: which lake rows each rank reads, and the tf.data pipeline that reads them.

Sharding is planned on the driver (``visionlake.lake.shards``): by row group, or by row when a split or label subset has
too few row groups for that, and every rank takes the same number of steps per epoch (the smallest share's), so no
rank waits at epoch end for a collective the others never reach. Each rank then reads its share through petastorm
(``train.reader=petastorm``), pyarrow (``arrow``, ``lake.arrow_reader``) or its ``shard`` of the TFRecord records
(``tfrecord``), decodes the stored images (PNG or JPEG), scales, augments, batches and prefetches.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, replace
from typing import Any, Iterator, Literal, Optional

import pandas as pd

from visionlake.config import AugmentConfig, ConfigError
from visionlake.lake.manifest import Manifest
from visionlake.lake.shards import RankShard, ShardPlan, plan_records, plan_shards, read_row_group_stats, row_rank
from visionlake.uris import file_uri


@dataclass(frozen=True)
class TrainingInputs:
    """What every rank reads, planned once on the driver."""
    train: tuple[RankShard, ...]      # per rank
    val: tuple[RankShard, ...]        # per rank (validation is summed over the ranks)
    test_files: tuple[str, ...]       # the whole test split (evaluated on one process)
    train_files: tuple[str, ...]      # the whole train split (e.g. the FCD train-vs-test floor)
    steps: int                        # per epoch, the same on every rank
    synthetic: tuple[RankShard, ...] = ()
    synthetic_rows: int = 0
    synthetic_runs: tuple[str, ...] = ()
    val_files: tuple[str, ...] = ()   # the whole val split (e.g. the FCD a GAN run selects its generator on)

    def mix_tags(self, fraction: float) -> dict[str, str]:
        """What an MLflow run records about its real/synthetic mix."""
        return {"data.synthetic_fraction": str(fraction), "data.synthetic_rows": str(self.synthetic_rows),
                "data.synthetic_runs": ",".join(self.synthetic_runs) or "none"}

    def sharding_tags(self) -> dict[str, str]:
        """What an MLflow run records about how its ranks shared the training split."""
        return {"data.sharding": self.train[0].by, "data.rows_per_rank": ",".join(str(s.rows) for s in self.train),
                "data.steps_per_epoch": str(self.steps)}


def plan_inputs(spark, lake, manifest: Manifest, *, num_proc: int, batch_size: int, max_steps: int,
                reader: str = "petastorm", synthetic_fraction: float = 0.0, section: str = "train",
                labels: tuple[int, ...] = ()) -> TrainingInputs:
    """Shards the dataset's splits over ``num_proc`` ranks and sets the steps per epoch.

    With ``synthetic_fraction`` > 0, a (1 - fraction) share of each batch is real, so an epoch still passes over the
    real shard about once. ``section`` names the config section in error messages. ``labels`` restricts the
    planned rows to those labels (the reader filters with the same ``InputSpec.labels``).

    Raises:
        ConfigError: fewer images than ranks x batch, no TFRecord copy to read, or no synthetic images to mix in.
    """
    dataset = manifest.dataset
    files = {split: lake.table_files(dataset, "images", split, manifest) for split in ("train", "val", "test")}
    synthetic_files = lake.table_files(dataset, "synthetic", "train", manifest) if synthetic_fraction > 0 else []
    if synthetic_fraction > 0 and not synthetic_files:
        raise ConfigError(f"{section}.synthetic_fraction={synthetic_fraction} but dataset {dataset!r} has no "
                          f"synthetic images; run `visionlake generate` first or set {section}.synthetic_fraction=0")
    parquet_splits = () if reader == "tfrecord" else ("train", "val")
    stats = read_row_group_stats(spark, [f for s in parquet_splits for f in files[s]] + synthetic_files, num_proc)

    def in_files(names: list[str]) -> list:
        wanted = set(names)
        return [group for group in stats if group.file in wanted]

    if reader == "tfrecord":
        train_plan = _tfrecord_plan(manifest, "train", num_proc, labels, section)
        val_plan = _tfrecord_plan(manifest, "val", num_proc, labels, section)
    else:
        train_plan = plan_shards(in_files(files["train"]), num_proc, labels)
        val_plan = plan_shards(in_files(files["val"]), num_proc, labels, min_row_group_share=0.0)
    synthetic_plan, synthetic_rows = ShardPlan(()), 0
    if synthetic_files:
        synthetic_plan = plan_shards(in_files(synthetic_files), num_proc)
        synthetic_rows = sum(synthetic_plan.rows)
    real_per_batch = max(1, round(batch_size * (1.0 - synthetic_fraction)))
    steps = train_plan.steps_per_epoch(real_per_batch)
    if max_steps:
        steps = min(steps, max_steps)
    if steps == 0:
        raise ConfigError(f"the train split of {dataset!r} has fewer images than {num_proc} rank(s) x batch "
                          f"{batch_size} (ranks get {list(train_plan.rows)}); lower {section}.batch_size or "
                          "train.num_proc")
    synthetic_runs = tuple(sorted((manifest.synthetic or {}).get("live_runs", [])))
    return TrainingInputs(train_plan.shards, val_plan.shards, tuple(files["test"]), tuple(files["train"]), steps,
                          synthetic_plan.shards, synthetic_rows, synthetic_runs if synthetic_files else (),
                          tuple(files["val"]))


def _tfrecord_plan(manifest: Manifest, split: str, num_proc: int, labels: tuple[int, ...],
                   section: str) -> ShardPlan:
    if not manifest.image.tfrecord:
        raise ConfigError(f"dataset {manifest.dataset!r} has no TFRecord copy (ingested with "
                          f"ingest.tfrecord=false); set {section}.reader=petastorm, or re-ingest with "
                          "ingest.tfrecord=true ingest.full_rebuild=true")
    base = manifest.tables["tfrecord"].rsplit("/tfrecord", 1)[0]
    files = tuple(f"{base}/{f}" for f in manifest.tfrecord_files.get(split, []))
    names = manifest.label_names
    rows = sum(n for name, n in manifest.counts.get(split, {}).items()
               if not labels or names.index(name) in labels)
    return plan_records(files, rows, num_proc)


@dataclass(frozen=True)
class InputSpec:
    image_shape: tuple[int, int, int]
    batch_size: int
    reader: Literal["petastorm", "tfrecord", "arrow"] = "petastorm"
    scale: Literal["unit", "tanh"] = "unit"  # [0, 1] for classifiers, [-1, 1] for GANs
    shuffle_buffer: int = 2048
    seed: int = 0
    augment: AugmentConfig = AugmentConfig()
    tfrecord_compression: str = "none"
    labels: tuple[int, ...] = ()  # only these labels (e.g. the normal class of an anomaly detector); () = all
    codec: Optional[str] = None   # the dataset's stored codec (png|jpeg); None = told apart per image

    @property
    def parquet_reader(self) -> str:
        return parquet_reader(self.reader)


def parquet_reader(reader: str) -> str:
    """What reads Parquet tables (test splits, synthetic images, generative training) for ``train.reader``: arrow
    when it is arrow, so a stack without petastorm never needs it, else petastorm."""
    return "arrow" if reader == "arrow" else "petastorm"


def _petastorm_url(uri: str) -> str:
    return file_uri(uri) if uri.startswith("file:") else uri


@contextlib.contextmanager
def open_images(spec: InputSpec, source: RankShard, training: bool, synthetic: Optional[RankShard] = None,
                synthetic_fraction: float = 0.0) -> Iterator[Any]:
    """Yields a ``tf.data.Dataset`` of ``(images float32, labels int32)`` batches; closes its readers on exit.

    Args:
        source: this rank's share of a split: Parquet files (petastorm) or TFRecord files, and how to shard them.
        training: repeat forever, shuffle, augment and drop the last partial batch.
        synthetic, synthetic_fraction: training only: this rank's share of the ``synthetic`` table, drawn at
            random for this share of the examples (real and synthetic images then pass the same augmentation).
    """
    import tensorflow as tf

    with contextlib.ExitStack() as readers:
        encoded = _encoded_examples(spec, source, training, readers)
        if training and synthetic is not None and synthetic.files and synthetic_fraction > 0:
            mixed = _encoded_examples(replace(spec, reader=spec.parquet_reader, labels=()), synthetic, True, readers)
            encoded = tf.data.Dataset.sample_from_datasets(
                [encoded, mixed], weights=[1.0 - synthetic_fraction, synthetic_fraction], seed=spec.seed)
        yield _batches(encoded, spec, training)


def _encoded_examples(spec: InputSpec, source: RankShard, training: bool, readers: contextlib.ExitStack):
    """(stored image bytes, label) pairs of the rank's share; a petastorm reader is registered with ``readers``."""
    import tensorflow as tf

    if not source.files:
        return tf.data.Dataset.from_tensor_slices((tf.constant([], tf.string), tf.constant([], tf.int32)))
    if spec.reader == "arrow":
        from visionlake.lake.arrow_reader import arrow_dataset

        return arrow_dataset(source, spec.labels, training, spec.seed)
    if spec.reader == "petastorm":
        from petastorm.tf_utils import make_petastorm_dataset

        by_row_group = source.shared_by_row_group
        reader = open_batch_reader(
            [_petastorm_url(f) for f in source.files],
            schema_fields=["image", "label", "id"] if source.shared_by_row else ["image", "label"],
            num_epochs=None if training else 1, shuffle_row_groups=training, seed=spec.seed, workers_count=2,
            cur_shard=source.rank if by_row_group else None, shard_count=source.ranks if by_row_group else None,
            predicate=_row_filter(spec.labels, source))
        readers.callback(_close_reader, reader)
        return make_petastorm_dataset(reader).unbatch().map(lambda row: (row.image, tf.cast(row.label, tf.int32)))
    from visionlake.lake.tfrecord import tfrecord_examples

    examples = tfrecord_examples(list(source.files), spec.tfrecord_compression)
    if source.by == "record":
        examples = examples.shard(source.ranks, source.rank)
    encoded = examples.map(lambda example: (example["image/encoded"], tf.cast(example["label"], tf.int32)))
    return encoded.repeat() if training else encoded


def _row_filter(labels: tuple[int, ...], source: RankShard):
    """A petastorm predicate keeping the wanted labels and, when sharding by row, this rank's rows; None when
    every row is kept. petastorm reads the predicate's small columns first and skips row groups it rejects whole."""
    from petastorm.predicates import PredicateBase

    by_row = source.shared_by_row
    if not labels and not by_row:
        return None

    class RowFilter(PredicateBase):
        def get_fields(self):
            return {"label", "id"} if by_row else {"label"}

        def do_include(self, values):
            keep = values["label"].isin(labels) if labels else pd.Series(True, index=values.index)
            if by_row:
                keep &= row_rank(values["id"], source.ranks) == source.rank
            return keep

    return RowFilter()


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
        image = tf.cast(decode_lake_image(encoded, spec.image_shape, spec.codec), tf.float32) / 255.0
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


def decode_lake_image(encoded, image_shape: tuple[int, int, int], codec: Optional[str] = None):
    """TF op: one stored lake image -> a uint8 tensor of its shape. ``codec`` (the dataset's, png|jpeg) picks the
    decoder; None tells PNG from JPEG per image, which costs the small-image input path ~8% (bench/train_bench.py)."""
    import tensorflow as tf

    channels = image_shape[2]

    def jpeg():  # INTEGER_ACCURATE is libjpeg's default (Pillow's): TF's own default differs by up to 8 grey levels
        return tf.io.decode_jpeg(encoded, channels=channels, dct_method="INTEGER_ACCURATE")

    def png():
        return tf.io.decode_png(encoded, channels=channels)

    image = {"jpeg": jpeg, "png": png}[codec]() if codec else tf.cond(tf.io.is_jpeg(encoded), jpeg, png)
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
