"""One typed configuration object for every job, layered: the embedded defaults, then each ``--conf`` YAML file in
order, then ``key.path=value`` overrides -> ``Config``.

The embedded defaults are ``visionlake/conf/local.yaml`` (``conf/local.yaml`` in the repository points at it); a file
needs to hold only what it changes. ``resolve_config`` also says which layer set each value (``show-config``).
The sections are pydantic dataclasses: pydantic checks the merged layers' types, ranges and cross-field rules, and
every failure becomes one ``ConfigError`` naming the dotted key, before any Spark or MLflow work starts.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional, Sequence, Union

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from visionlake.uris import has_scheme, is_local, local_path


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key and what to do."""


# Strict: YAML already types its scalars, so "3", 3.0 or true where an integer belongs is a mistake to report, not a
# value to coerce (an integer is still a number). Strict pydantic takes only instances for a nested dataclass, so
# ``_bind`` builds each section from its keywords. Unknown keywords fail instead of being dropped. Deferred build:
# executors only unpickle configs, never validate them, so they skip building the validators (~35 ms a worker).
_SECTION = ConfigDict(strict=True, extra="forbid", defer_build=True)


def _scalar_as_text(value: Any) -> Any:
    """A text setting takes a YAML scalar as written: ``false`` and ``8`` are the strings "false" and "8" (Spark
    properties, dataset names). Mappings, lists and null go on to the string check, which rejects them."""
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, (dict, list)) or value is None else str(value)


Text = Annotated[str, BeforeValidator(_scalar_as_text)]


def _folder_name(name: str) -> str:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{name!r}: use letters, digits, '-' and '_' only")
    return name


# Every section that names a dataset: the name is its folder in the lake.
DatasetName = Annotated[Text, AfterValidator(_folder_name)]
# Ranges. An error states the range, after the field's title and before its description (``_expectation``).
AtLeastOne = Annotated[int, Field(ge=1)]        # counts, sizes, epochs
Share = Annotated[float, Field(ge=0, lt=1)]     # [0, 1): a part of a whole, never all of it
Fraction = Annotated[float, Field(gt=0, le=1)]  # (0, 1]: some of a whole, up to all of it
GreyLevel = Annotated[int, Field(ge=0, le=255, title="a grey level")]
ImageSide = Annotated[int, Field(ge=1, le=4096)]  # pixels


@dataclass(frozen=True, config=_SECTION)
class SparkConfig:
    master: Text = "local[*]"
    app_name: Text = "visionlake"
    # Extra Spark properties applied only when the session is created here (not under spark-submit).
    conf: dict[Text, Text] = field(default_factory=dict)


@dataclass(frozen=True, config=_SECTION)
class LakeConfig:
    root: Text = "lake"
    # Petastorm shards and shuffles by row group: ~4 MiB gives many row groups per table for even sharding and
    # shuffling across Horovod ranks while keeping Parquet's per-row-group overhead negligible.
    row_group_bytes: int = 4 * 1024 * 1024
    # Stored PNG/JPEG bytes do not compress further: zstd writes as fast as no compression (snappy costs ~12% more
    # ingest time on photos, bench/photo_bench.py) and still shrinks the id, path and label columns.
    parquet_compression: Literal["zstd", "snappy", "none"] = "zstd"
    tfrecord_compression: Literal["none", "gzip"] = "none"
    # Parallelism of the write stages; 0 means "Spark's default parallelism".
    write_partitions: int = 0
    # `visionlake vacuum` removes files a newer version superseded this many hours ago (Delta Lake's default, 7
    # days): readers and training runs still on an older version read it whole until then.
    retention_hours: Annotated[float, Field(
        ge=0, description="hours a superseded file is kept for readers of older versions, e.g. 168")] = 168.0
    # "" or a local or NFS folder where each table write holds <folder>/<dataset>.<table>.lock (fcntl): makes one
    # driver host's writers of a lake on an object store (s3a://, gs://, abfs://) take turns. "" = a lock beside each
    # table on local and NFS paths, none elsewhere (HDFS renames atomically).
    commit_lock: Text = ""

    @model_validator(mode="after")
    def _lock_is_local(self) -> LakeConfig:
        lock = self.commit_lock
        if lock and "://" in lock and not lock.startswith("file:"):
            raise ValueError(f"commit_lock={lock} must be a local or NFS folder (the lock is an fcntl lock on a "
                             "file there)")
        return self


@dataclass(frozen=True, config=_SECTION)
class TrackingConfig:
    tracking_uri: Text = "sqlite:///mlflow.db"
    artifact_root: Text = "mlartifacts"
    experiment: Text = "visionlake"


@dataclass(frozen=True, config=_SECTION)
class SourceConfig:
    # A directory tree, a single archive, or a tree holding archives, on any Hadoop file system URI.
    uri: Text = "data/demo-raw"
    # Optional CSV manifest (columns: path,label[,split]); relative paths resolve against the manifest's folder.
    manifest: Optional[Text] = None
    expand_archives: bool = True
    extensions: list[Text] = field(
        default_factory=lambda: [".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"])


@dataclass(frozen=True, config=_SECTION)
class LabelConfig:
    # folder: the first folder below the source root (below a split folder when split.mode=source), as
    # torchvision's ImageFolder and Keras' image_dataset_from_directory; files nested deeper keep it.
    # parent_folder: the folder that directly holds the file. regex: ``pattern`` on the file name.
    source: Literal["folder", "parent_folder", "regex", "manifest"] = "folder"
    # Regex with a named group ``label``, matched against the file name.
    pattern: Optional[Text] = None
    # Ordered class names: index in this list = integer label. Empty: discovered from the data (kept stable across runs).
    names: list[Text] = field(default_factory=list)

    @model_validator(mode="after")
    def _regex_names_the_label(self) -> LabelConfig:
        if self.source == "regex" and "(?P<label>" not in (self.pattern or ""):
            raise ValueError("pattern needs a named group, e.g. '(?P<label>[a-z]+)_\\d+\\.png'")
        return self


SPLITS = ("train", "val", "test")
_RATIO_SUM_TOLERANCE = 1e-6  # float sums of decimals, e.g. 0.7 + 0.15 + 0.15


@dataclass(frozen=True, config=_SECTION)
class SplitConfig:
    mode: Literal["hash", "source"] = "hash"
    ratios: dict[Text, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    # mode=source: folder name -> split, and the share of the source's train split moved to val (by hash).
    source_names: dict[Text, Text] = field(
        default_factory=lambda: {"train": "train", "training": "train", "val": "val", "validation": "val",
                                 "test": "test", "testing": "test"})
    val_from_train: Share = 0.1

    @model_validator(mode="after")
    def _ratios_share_out_the_splits(self) -> SplitConfig:
        ratios = self.ratios
        if set(ratios) - set(SPLITS):
            raise ValueError(f"ratios: only {'/'.join(SPLITS)} are allowed, got {sorted(ratios)}")
        if any(ratio < 0 for ratio in ratios.values()) or abs(sum(ratios.values()) - 1.0) > _RATIO_SUM_TOLERANCE:
            raise ValueError(f"ratios must be non-negative and sum to 1, got {ratios}")
        return self


@dataclass(frozen=True, config=_SECTION)
class ImageConfig:
    mode: Literal["L", "RGB"] = "L"
    height: ImageSide = 28
    width: ImageSide = 28
    resize: Literal["pad", "crop", "stretch"] = "pad"
    invert: bool = False
    pad_value: GreyLevel = 0
    # Transparent pixels are composited over this grey level before the alpha channel is dropped.
    alpha_background: GreyLevel = 255
    # How the lake stores the normalised pixels: png is lossless (small and grayscale images), jpeg is ~5x smaller
    # on photos (bench/photo_bench.py). Fixed per dataset: changing it needs ingest.full_rebuild.
    codec: Literal["png", "jpeg"] = "png"
    quality: Annotated[int, Field(ge=1, le=100, title="a JPEG quality", description="95 is near-lossless")] = 95
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = 1   # png only: zlib's levels


@dataclass(frozen=True, config=_SECTION)
class LimitsConfig:
    # Decompression-bomb guard: checked from the header, before any pixel is decoded.
    max_pixels: AtLeastOne = 40_000_000
    max_file_bytes: AtLeastOne = 64 * 1024 * 1024


@dataclass(frozen=True, config=_SECTION)
class IngestConfig:
    dataset: DatasetName = "demo"
    source: SourceConfig = field(default_factory=SourceConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    full_rebuild: bool = False
    # A second full copy of the images as TFRecord shards for tf.data (train.reader=tfrecord). Fixed per dataset.
    tfrecord: bool = True


@dataclass(frozen=True, config=_SECTION)
class AugmentConfig:
    flip: bool = False
    crop_fraction: Fraction = 1.0  # < 1: random crop of this side fraction, resized back
    brightness: float = 0.0        # max delta on [0, 1] pixels
    contrast: float = 0.0          # factor range 1 +- contrast

    @property
    def enabled(self) -> bool:
        return self.flip or self.crop_fraction < 1.0 or self.brightness > 0 or self.contrast > 0


@dataclass(frozen=True, config=_SECTION)
class TrainConfig:
    dataset: DatasetName = "demo"
    # The dataset version to train on (its images table's Delta version; time travel); 0 = the latest.
    dataset_version: Annotated[int, Field(ge=0)] = 0
    model: Literal["lenet", "resnet_small"] = "lenet"
    # petastorm (the default), tfrecord (the TFRecord copy, tf.data only) or arrow (pyarrow into tf.data, no petastorm:
    # also what the generative trainers and evaluation read Parquet with)
    reader: Literal["petastorm", "tfrecord", "arrow"] = "petastorm"
    # horovod (the default) or tf_distribute (MultiWorkerMirroredStrategy on Spark barrier tasks: no Horovod, so it
    # also runs on stacks Horovod cannot build on, e.g. Keras 3); the same rank loop, models and tracking
    engine: Literal["horovod", "tf_distribute"] = "horovod"
    num_proc: int = 0            # ranks; 0 = Spark's default parallelism (the local core count)
    threads_per_rank: int = 0    # 0 = cores / ranks
    epochs: AtLeastOne = 5
    batch_size: AtLeastOne = 32  # per rank
    learning_rate: Annotated[float, Field(gt=0)] = 0.001  # per rank: scaled by the number of ranks
    scale_lr_by_ranks: bool = True
    warmup_epochs: float = 1.0
    lr_schedule: Literal["plateau", "cosine"] = "plateau"  # after the warm-up
    lr_decay_factor: float = 0.5  # on a validation-loss plateau of lr_patience epochs
    lr_patience: int = 2
    early_stopping_patience: int = 4
    max_steps_per_epoch: int = 0  # 0 = the whole shard
    shuffle_buffer: int = 2048
    seed: int = 42
    mixed_precision: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Where rank 0 keeps each run's checkpoints (any Hadoop FS URI pyarrow reaches); "" = <lake.root>/_checkpoints,
    # which every node can reach because the lake is shared.
    checkpoint_root: Text = ""
    resume_run_id: Optional[Text] = None
    registered_model: Text = "visionlake-classifier"
    # Share of each training batch drawn from the dataset's `synthetic` table (0 = real images only).
    synthetic_fraction: Annotated[Share, Field(description="the share of each batch that is synthetic")] = 0.0


@dataclass(frozen=True, config=_SECTION)
class GanConfig:
    latent_dim: AtLeastOne = 100
    filters: int = 64             # the discriminator's first conv; the generator mirrors it
    embedding_dim: int = 50       # cDCGAN label embedding concatenated with the latent vector
    learning_rate: float = 0.0002
    # The discriminator's own rate (two time-scale update rule, Heusel et al. 2017); unset = learning_rate.
    discriminator_learning_rate: Annotated[Optional[float], Field(gt=0, description="unset = learning_rate")] = None
    beta1: float = 0.5
    # Adam's second-moment decay; below 0.999 its step size follows the adversarial gradients' swings sooner.
    beta2: Annotated[float, Field(gt=0, lt=1, description="Adam's beta_2, e.g. 0.999")] = 0.999
    loss: Literal["non_saturating", "minimax"] = "non_saturating"
    real_label: Fraction = 0.9        # one-sided label smoothing: the target for real images (1.0 = off)
    discriminator_steps: AtLeastOne = 1  # k discriminator steps per generator step
    dropout: float = 0.3
    # R1: gamma/2 * E||grad_x D(x)||^2 on real images; keeps a discriminator that wins early from drowning G's
    # gradients (Mescheder et al. 2018). 0 = off.
    r1_gamma: Annotated[float, Field(ge=0, description="0 turns the R1 penalty off")] = 0.0
    # cDCGAN only, AC-GAN style: the discriminator also names the class of real images, and the generator is
    # rewarded when its images get their conditioning label; 0 = the label is an input only (learned far slower).
    class_loss_weight: Annotated[float, Field(ge=0, description="0 turns the auxiliary class loss off")] = 1.0
    # The generator that is sampled, evaluated and registered is an exponential moving average of the trained one's
    # weights (decay per generator step); it smooths the step-to-step wobble of GAN training. 0 = the raw weights.
    average_decay: Annotated[Share, Field(description="e.g. 0.99; 0 registers the raw weights")] = 0.0


@dataclass(frozen=True, config=_SECTION)
class AutoencoderConfig:
    latent_dim: AtLeastOne = 32
    filters: int = 32
    learning_rate: float = 0.001
    kl_weight: float = 1.0        # VAE only: weight of the KL term against the summed squared error


@dataclass(frozen=True, config=_SECTION)
class QualityConfig:
    # The classifier whose penultimate ("features") layer defines the FCD feature space; "" disables FCD.
    classifier: Text = "models:/visionlake-classifier@champion"
    samples: AtLeastOne = 10000    # real and generated images per FCD estimate
    every_epochs: AtLeastOne = 2   # all quality figures and a grid every N epochs and after the last (train_fcd: every)


@dataclass(frozen=True, config=_SECTION)
class GenerativeConfig:
    model: Literal["dcgan", "cdcgan", "vae", "autoencoder"] = "cdcgan"
    epochs: AtLeastOne = 5
    batch_size: AtLeastOne = 64    # per rank
    max_steps_per_epoch: int = 0   # 0 = the whole shard
    registered_prefix: Text = "visionlake"  # registered as <prefix>-<model>
    gan: GanConfig = field(default_factory=GanConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def registered_name(self) -> str:
        return f"{self.registered_prefix}-{self.model}"

    @property
    def is_gan(self) -> bool:
        return self.model in ("dcgan", "cdcgan")


@dataclass(frozen=True, config=_SECTION)
class SyntheticConfig:
    model: Text = "visionlake-cdcgan@champion"  # registered name, name@alias, name/version or a models:/ URI
    per_class: AtLeastOne = 1000
    batch_size: AtLeastOne = 256  # images generated per model call on a worker
    seed: int = 0


@dataclass(frozen=True, config=_SECTION)
class AnomalyConfig:
    # The default is the best mean AUROC of bench/anomaly_bench.py (one-class MNIST): VAE 0.956 vs autoencoder 0.934.
    method: Literal["autoencoder", "vae", "gan", "classifier"] = "vae"
    # Labels (names) that are normal; empty = the whole training split is normal.
    normal_labels: list[Text] = field(default_factory=list)
    false_positive_rate: Annotated[Share, Field(description="on held-out normal validation images, e.g. 0.05")] = 0.05
    # GAN scorer (f-AnoGAN style): weight of the discriminator-feature residual against the pixel residual.
    feature_weight: float = 1.0
    encoder_epochs: int = 5             # GAN scorer: epochs of the encoder trained to invert the frozen generator
    registered_model: Text = "visionlake-anomaly"


@dataclass(frozen=True, config=_SECTION)
class ScoreConfig:
    dataset: DatasetName = "demo"
    table: Literal["images", "synthetic"] = "images"
    dataset_version: Annotated[int, Field(ge=0)] = 0  # the images table's Delta version to score; 0 = the latest
    raw_uri: Text = ""                  # a raw drop to ingest (ingest.* settings, into `dataset`) before scoring
    classifier: Text = "models:/visionlake-classifier@champion"
    anomaly_model: Text = "models:/visionlake-anomaly@champion"
    batch_size: AtLeastOne = 256
    top_k: AtLeastOne = 3
    anomaly_maps: bool = True           # per-pixel reconstruction-difference PNGs for flagged images
    max_anomaly_maps: int = 50


@dataclass(frozen=True, config=_SECTION)
class DemoConfig:
    images_per_class: AtLeastOne = 200
    seed: int = 7
    image_size: int = 40
    anomaly_epochs: AtLeastOne = 16         # the demo's short schedule for the anomaly VAE
    gan_epochs: AtLeastOne = 50             # ... and for the cDCGAN, which needs more steps to draw its classes
    # The cDCGAN's batch norm normalises over each rank's own batch: on 2 cores, two ranks of 16 images left it 16,
    # and one rank of 32 (the same steps, both cores through TensorFlow's threads) scored a lower FCD (README).
    gan_ranks: AtLeastOne = 1
    gan_batch_size: AtLeastOne = 32         # per rank
    quality_every_epochs: AtLeastOne = 2    # FCD and sample grid every N GAN epochs (generative.quality.every_epochs)
    generative_batch_size: AtLeastOne = 16  # the VAE's, per rank: ~700 training images give 22 steps per epoch, not 5
    quality_samples: AtLeastOne = 1000      # images per FCD estimate in the demo (generative.quality.samples)
    # `visionlake demo` trains the anomaly model on these shapes only, so rings show up as the anomalies.
    normal_labels: list[Text] = field(default_factory=lambda: ["circle", "cross", "square", "triangle"])
    # The HTML report of a demo run (pictures inline; open it without a server), relative to the working directory.
    report: Text = "demo-report.html"


@dataclass(frozen=True, config=_SECTION)
class LogConfig:
    # Everything other libraries log (Spark's JVM, MLflow, petastorm, TensorFlow, Horovod's rank output) goes here,
    # appended; the console shows visionlake's own lines. Relative to the working directory, the job's workspace.
    file: Text = "visionlake.log"
    verbose: bool = False         # the other libraries' lines on the console too (`--verbose`)


@dataclass(frozen=True, config=_SECTION)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @model_validator(mode="after")
    def _manifest_labels_have_a_manifest(self) -> Config:
        if self.ingest.label.source == "manifest" and not self.ingest.source.manifest:
            raise ValueError("ingest.label.source=manifest needs ingest.source.manifest (a CSV with path,label)")
        return self


# Keys holding local paths or URIs; relative local paths are made absolute against the working directory at load.
_PATH_KEYS = ("lake.root", "lake.commit_lock", "log.file", "demo.report", "tracking.artifact_root", "ingest.source.uri",
              "ingest.source.manifest", "train.checkpoint_root", "score.raw_uri")


DEFAULTS_LAYER = "defaults"  # the embedded local.yaml
OVERRIDE_LAYER = "override"
BUILT_IN_LAYER = "built-in"  # a key no layer sets: the dataclass default
# Mapping fields whose entries are separate settings, so a layer adds to them entry by entry. Other mappings (split
# ratios, split folder names) are one setting each, which a layer replaces whole: ratios must sum to 1.
_MERGED_MAPPINGS = ("spark.conf",)


@dataclasses.dataclass(frozen=True)
class ResolvedConfig:
    """A config and where each of its values came from: dotted key -> ``defaults``, a file path, ``override``, or
    ``derived from <key>``. Keys no layer set are absent (``source_of`` says ``built-in``)."""
    config: Config
    sources: dict[str, str]
    layers: tuple[str, ...] = (DEFAULTS_LAYER, OVERRIDE_LAYER)  # lowest first

    def source_of(self, dotted: str) -> str:
        """The layer that set ``dotted`` or the nearest section or mapping entry above it."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            layer = self.sources.get(".".join(parts[:end]))
            if layer:
                return layer
        return BUILT_IN_LAYER

    def describe(self) -> str:
        """Every setting as a ``key=value`` line (pasteable as an override) with the layer that set it."""
        rows = [(f"{key}={_flow(value)}", self.source_of(key)) for key, value in _leaves(self.config.to_dict())]
        width = min(max(len(setting) for setting, _ in rows), 64)
        layers = " < ".join((BUILT_IN_LAYER, *self.layers))
        lines = (f"{setting:<{width}}  # {layer}" for setting, layer in rows)
        return "\n".join([f"# later layers win: {layers}", *lines])


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every setting; ``spark.conf`` entries one by one, other mappings as one value."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and (dotted in _MERGED_MAPPINGS or not _is_mapping_field(dotted)):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _is_mapping_field(dotted: str) -> bool:
    return _names_a_mapping_entry(dotted.split(".") + ["entry"])


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.strip().removesuffix("\n...").strip()


def config_summary(config: Config) -> list[str]:
    """A job's configuration in three lines for its log (``visionlake show-config`` prints all of it)."""
    image, train = config.ingest.image, config.train
    return [f"config: Spark {config.spark.master}, lake {config.lake.root}, MLflow {config.tracking.tracking_uri}",
            f"config: ingest {config.ingest.source.uri} -> dataset {config.ingest.dataset!r} ({image.width}x"
            f"{image.height} {image.mode} {image.codec}); train {train.model} on {train.dataset!r}, "
            f"{train.epochs} epochs x batch {train.batch_size}/rank, {train.reader} reader, {train.engine} engine",
            "config: `visionlake show-config` with the same --conf and overrides prints every setting and its layer"]


def resolve_config(paths: Union[None, str, Sequence[str]] = None, overrides: Optional[Sequence[str]] = None,
                   base_dir: Optional[str] = None) -> ResolvedConfig:
    """Layers the configuration: the embedded defaults (``local.yaml``), then each YAML file in ``paths`` in order,
    then the ``key.path=value`` overrides; a later layer wins key by key (sections merge, ``spark.conf`` merges entry
    by entry, other values are replaced whole).

    Args:
        paths: YAML files layered over the defaults (a single path, a list, or None for the defaults alone).
        overrides: ``dotted.key=value`` strings; values are parsed as YAML scalars/lists.
        base_dir: folder that relative paths in the config resolve against (default: the working directory).

    Raises:
        ConfigError: unreadable file, unknown key (named with its layer), wrong type or invalid value.
    """
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    files = [paths] if isinstance(paths, str) else list(paths or [])
    for layer, data in [(DEFAULTS_LAYER, _read_yaml(None)), *((path, _read_yaml(path)) for path in files)]:
        _merge_layer(raw, data, Config, "", layer, sources)
    for override in overrides or []:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} must look like key.path=value, e.g. ingest.dataset=mnist")
        parts = _split_key(key.strip())
        parsed = yaml.safe_load(value) if value.strip() else ""
        _merge_layer(raw, _nested(parts, parsed), Config, "", OVERRIDE_LAYER, sources,
                     entries_merge=_names_a_mapping_entry(parts))
    config = _absolutise_paths(_bind(Config, raw), Path(base_dir or os.getcwd()))
    if not config.train.checkpoint_root:
        config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, checkpoint_root=f"{config.lake.root.rstrip('/')}/_checkpoints"))
        sources["train.checkpoint_root"] = "derived from lake.root"
    return ResolvedConfig(config, sources, (DEFAULTS_LAYER, *files, OVERRIDE_LAYER))


def load_config(paths: Union[None, str, Sequence[str]] = None, overrides: Optional[Sequence[str]] = None,
                base_dir: Optional[str] = None) -> Config:
    """The ``Config`` of ``resolve_config`` (same arguments, same errors)."""
    return resolve_config(paths, overrides, base_dir).config


def _nested(parts: list[str], value: Any) -> dict[str, Any]:
    for part in reversed(parts):
        value = {part: value}
    return value


def _merge_layer(tree: dict[str, Any], data: Any, cls: Any, prefix: str, layer: str, sources: dict[str, str],
                 entries_merge: bool = False) -> None:
    """Merges one layer's mapping into ``tree`` and records ``layer`` as the source of every key it sets.

    ``entries_merge``: every mapping field merges entry by entry (for an override that names one entry, e.g.
    ``ingest.split.ratios.val=0.2``); otherwise only ``_MERGED_MAPPINGS`` do.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} in {layer} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        hint = hints.get(key)
        if dataclasses.is_dataclass(cls) and hint is None:
            known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
            raise ConfigError(f"unknown config key {dotted} in {layer}; known keys under "
                              f"{prefix.rstrip('.') or 'the top level'}: {known}")
        if dataclasses.is_dataclass(hint) and not isinstance(value, dict):
            raise ConfigError(f"{dotted} in {layer} must be a mapping (a section of settings), got {value!r}")
        merges = dataclasses.is_dataclass(hint) or (typing.get_origin(hint) is dict and (
            entries_merge or dotted in _MERGED_MAPPINGS))
        if merges and isinstance(value, dict) and isinstance(tree.get(key, {}), dict):
            child = tree.setdefault(key, {})
            if dataclasses.is_dataclass(hint):
                _merge_layer(child, value, hint, dotted + ".", layer, sources, entries_merge)
            else:
                child.update(value)
                sources.update({f"{dotted}.{entry}": layer for entry in value})
            continue
        tree[key] = value
        for stale in [name for name in sources if name.startswith(dotted + ".")]:
            del sources[stale]
        sources[dotted] = layer


def is_local_master(master: str) -> bool:
    """``local``, ``local[4]``, ``local[*,2]``: driver and executors in one process on one disk."""
    return master == "local" or master.startswith("local[")


def check_reachable_from_executors(config: Config, master: str) -> None:
    """Under a cluster master, every place executors write must be visible from every node.

    The lake root is taken as shared (on a local path, it must be a mount every node has, as NFS is); checkpoints on
    a local path outside it would land on whichever node runs rank 0, and a SQLite or file MLflow store on the
    driver's disk cannot take rank 0's metrics or serve models to scoring tasks. Raises ``ConfigError`` naming the
    key, before any work starts.
    """
    if is_local_master(master):
        return
    lake_root = config.lake.root.rstrip("/")
    checkpoints = config.train.checkpoint_root
    if is_local(checkpoints) and is_local(lake_root) and not (
            local_path(checkpoints) + "/").startswith(local_path(lake_root) + "/"):
        raise ConfigError(f"train.checkpoint_root={checkpoints} is a path on one node's disk, and rank 0 may run on "
                          f"any node under {master}: leave it empty (= <lake.root>/_checkpoints) or set a URI on the "
                          "lake's shared file system")
    if is_local(checkpoints) and not is_local(lake_root):
        raise ConfigError(f"train.checkpoint_root={checkpoints} is a local path but the lake is on {lake_root}: "
                          "leave it empty (= <lake.root>/_checkpoints) or set a URI on a shared file system")
    tracking_uri = config.tracking.tracking_uri
    if not tracking_uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(f"tracking.tracking_uri={tracking_uri} is a store on the driver's disk, which executors "
                          f"under {master} cannot reach (rank 0 logs metrics, scoring tasks load models): run an "
                          "MLflow tracking server (`mlflow server --serve-artifacts`) and set its http:// URI")
    if config.tracking.artifact_root and is_local(config.tracking.artifact_root):
        raise ConfigError(f"tracking.artifact_root={config.tracking.artifact_root} is a local folder, which rank 0 on "
                          "another node cannot write: leave it empty so the tracking server stores and serves "
                          "artifacts (--serve-artifacts), or set an object-store URI")


def _read_yaml(path: Optional[str]) -> dict[str, Any]:
    if path is None:
        text = resources.files("visionlake").joinpath("conf/local.yaml").read_text()
        source = "embedded local.yaml"
    else:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}; pass an existing YAML file "
                              "with --conf, or leave it out for the embedded local defaults") from error
        source = path
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of sections (spark, lake, ingest, ...)")
    return data


def _split_key(dotted: str) -> list[str]:
    """Splits an override key by the config's structure: inside a mapping field (e.g. ``spark.conf``) the rest of
    the key is one entry, so ``spark.conf.spark.ui.enabled`` sets the Spark property ``spark.ui.enabled``."""
    parts, cls = dotted.split("."), Config
    for depth, part in enumerate(parts):
        hint = typing.get_type_hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
        if hint is None:
            return parts
        if typing.get_origin(hint) is dict:
            return parts[:depth + 1] + [".".join(parts[depth + 1:])] if depth + 1 < len(parts) else parts
        cls = hint
    return parts


def _names_a_mapping_entry(parts: list[str]) -> bool:
    """``ingest.split.ratios.val``: the key's parent is a mapping field, so the key sets one entry of it."""
    cls: Any = Config
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(cls):
            return False
        cls = typing.get_type_hints(cls).get(part)
    return typing.get_origin(cls) is dict


def _bind(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Builds the section ``cls`` from the merged layers' mapping, sections below it first; pydantic checks each."""
    hints = typing.get_type_hints(cls)
    values = {key: _bind(hints[key], value, f"{prefix}{key}.")
              if dataclasses.is_dataclass(hints.get(key)) and isinstance(value, dict) else value
              for key, value in data.items()}
    try:
        return cls(**values)
    except ValidationError as error:
        raise _config_error(cls, error.errors()[0], prefix) from None


_EXPECTED_TYPES = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
                   "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
                   "dataclass_exact_type": "a mapping (a section of settings)"}
_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _config_error(cls: type, error: ErrorDetails, prefix: str) -> ConfigError:
    """Pydantic's error on the section ``cls`` at ``prefix`` as one line naming the dotted key."""
    kind, location, value = error["type"], error["loc"], error["input"]
    key = prefix + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
    if kind == "value_error":  # a field's own rule, or a section's, which names its keys relative to the section
        return ConfigError(f"{key} {error['ctx']['error']}" if location else f"{prefix}{error['ctx']['error']}")
    if kind == "literal_error":
        choices = ", ".join(map(str, typing.get_args(typing.get_type_hints(cls)[location[0]])))
        return ConfigError(f"{key} must be one of {choices}; got {value!r}")
    if kind in _RANGE_ERRORS:
        return ConfigError(f"{key} must be {_expectation(cls.__pydantic_fields__[location[0]])}, got {value!r}")
    return ConfigError(f"{key} must be {_EXPECTED_TYPES[kind]}, got {value!r}" if kind in _EXPECTED_TYPES
                       else f"{key}: {error['msg']}, got {value!r}")


def _expectation(setting: FieldInfo) -> str:
    """``>= 1``, ``a grey level in 0..255`` or ``in [0, 1) (e.g. 0.05)``: a field's title, range and description."""
    bounds = {name: getattr(rule, name) for rule in setting.metadata for name in ("ge", "gt", "le", "lt")
              if hasattr(rule, name)}
    low, high = ("ge" if "ge" in bounds else "gt"), ("le" if "le" in bounds else "lt")
    if high not in bounds:
        span = f"{'>=' if low == 'ge' else '>'} {bounds[low]}"
    elif (low, high) == ("ge", "le"):
        span = f"in {bounds[low]}..{bounds[high]}"
    else:
        span = f"in {'[' if low == 'ge' else '('}{bounds[low]}, {bounds[high]}{']' if high == 'le' else ')'}"
    described = f" ({setting.description})" if setting.description else ""
    return " ".join(filter(None, (setting.title, span))) + described


def _absolutise_paths(config: Config, base: Path) -> Config:
    tree = config.to_dict()
    for dotted in _PATH_KEYS:
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node[leaf] = absolute_uri(node[leaf], base) if node[leaf] else node[leaf]
    tracking = tree["tracking"]
    if tracking["tracking_uri"].startswith("sqlite:///") and not tracking["tracking_uri"].startswith("sqlite:////"):
        tracking["tracking_uri"] = "sqlite:///" + str(base / tracking["tracking_uri"][len("sqlite:///"):])
    return _bind(Config, tree)


def absolute_uri(location: str, base: Path) -> str:
    """Leaves URIs with a scheme (hdfs://, s3a://, file:/) alone; makes a local path absolute against ``base``."""
    if has_scheme(location):
        return location
    return str((base / location).resolve())
