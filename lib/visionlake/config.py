"""One typed configuration object for every job, layered: the embedded defaults, then each ``--conf`` YAML file in
order, then ``key.path=value`` overrides -> ``Config``.

The embedded defaults are ``visionlake/conf/local.yaml`` (``conf/local.yaml`` in the repository points at it); a file
needs to hold only what it changes. ``resolve_config`` also says which layer set each value (``show-config``).
Unknown keys and wrong types are rejected with an error naming the dotted key, before any Spark or MLflow work starts.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import yaml

from visionlake.uris import has_scheme, is_local, local_path


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key and what to do."""


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "visionlake"
    # Extra Spark properties applied only when the session is created here (not under spark-submit).
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LakeConfig:
    root: str = "lake"
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
    retention_hours: float = 168.0
    # "" or a folder on a file system with exclusive create (a local/NFS path, hdfs://) where each commit holds
    # <folder>/<dataset>.lock: makes commits exclusive on object stores (s3a://, gs://, abfs://), which lack one.
    commit_lock: str = ""


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "mlartifacts"
    experiment: str = "visionlake"


@dataclass(frozen=True)
class SourceConfig:
    # A directory tree, a single archive, or a tree holding archives, on any Hadoop file system URI.
    uri: str = "data/demo-raw"
    # Optional CSV manifest (columns: path,label[,split]); relative paths resolve against the manifest's folder.
    manifest: Optional[str] = None
    expand_archives: bool = True
    extensions: list[str] = field(
        default_factory=lambda: [".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"])


@dataclass(frozen=True)
class LabelConfig:
    # folder: the first folder below the source root (below a split folder when split.mode=source), as
    # torchvision's ImageFolder and Keras' image_dataset_from_directory; files nested deeper keep it.
    # parent_folder: the folder that directly holds the file. regex: ``pattern`` on the file name.
    source: Literal["folder", "parent_folder", "regex", "manifest"] = "folder"
    # Regex with a named group ``label``, matched against the file name.
    pattern: Optional[str] = None
    # Ordered class names: index in this list = integer label. Empty: discovered from the data (kept stable across runs).
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SplitConfig:
    mode: Literal["hash", "source"] = "hash"
    ratios: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    # mode=source: folder name -> split, and the share of the source's train split moved to val (by hash).
    source_names: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "training": "train", "val": "val", "validation": "val",
                                 "test": "test", "testing": "test"})
    val_from_train: float = 0.1


@dataclass(frozen=True)
class ImageConfig:
    mode: Literal["L", "RGB"] = "L"
    height: int = 28
    width: int = 28
    resize: Literal["pad", "crop", "stretch"] = "pad"
    invert: bool = False
    pad_value: int = 0
    # Transparent pixels are composited over this grey level before the alpha channel is dropped.
    alpha_background: int = 255
    # How the lake stores the normalised pixels: png is lossless (small and grayscale images), jpeg is ~5x smaller
    # on photos (bench/photo_bench.py). Fixed per dataset: changing it needs ingest.full_rebuild.
    codec: Literal["png", "jpeg"] = "png"
    quality: int = 95             # jpeg only
    png_compress_level: int = 1   # png only


@dataclass(frozen=True)
class LimitsConfig:
    # Decompression-bomb guard: checked from the header, before any pixel is decoded.
    max_pixels: int = 40_000_000
    max_file_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class IngestConfig:
    dataset: str = "demo"
    source: SourceConfig = field(default_factory=SourceConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    full_rebuild: bool = False
    # A second full copy of the images as TFRecord shards for tf.data (train.reader=tfrecord). Fixed per dataset.
    tfrecord: bool = True


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = False
    crop_fraction: float = 1.0  # < 1: random crop of this side fraction, resized back
    brightness: float = 0.0     # max delta on [0, 1] pixels
    contrast: float = 0.0       # factor range 1 +- contrast

    @property
    def enabled(self) -> bool:
        return self.flip or self.crop_fraction < 1.0 or self.brightness > 0 or self.contrast > 0


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "demo"
    model: Literal["lenet", "resnet_small"] = "lenet"
    reader: Literal["petastorm", "tfrecord"] = "petastorm"
    num_proc: int = 0            # Horovod ranks; 0 = Spark's default parallelism (the local core count)
    threads_per_rank: int = 0    # 0 = cores / ranks
    epochs: int = 5
    batch_size: int = 32         # per rank
    learning_rate: float = 0.001  # per rank: scaled by the number of ranks
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
    checkpoint_root: str = ""
    resume_run_id: Optional[str] = None
    registered_model: str = "visionlake-classifier"
    # Share of each training batch drawn from the dataset's `synthetic` table (0 = real images only).
    synthetic_fraction: float = 0.0


@dataclass(frozen=True)
class GanConfig:
    latent_dim: int = 100
    filters: int = 64             # the discriminator's first conv; the generator mirrors it
    embedding_dim: int = 50       # cDCGAN label embedding concatenated with the latent vector
    learning_rate: float = 0.0002
    beta1: float = 0.5
    loss: Literal["non_saturating", "minimax"] = "non_saturating"
    real_label: float = 0.9       # one-sided label smoothing: the target for real images (1.0 = off)
    discriminator_steps: int = 1  # k discriminator steps per generator step
    dropout: float = 0.3
    # cDCGAN only, AC-GAN style: the discriminator also names the class of real images, and the generator is
    # rewarded when its images get their conditioning label; 0 = the label is an input only (learned far slower).
    class_loss_weight: float = 1.0
    # The generator that is sampled, evaluated and registered is an exponential moving average of the trained one's
    # weights (decay per generator step); it smooths the step-to-step wobble of GAN training. 0 = the raw weights.
    average_decay: float = 0.0


@dataclass(frozen=True)
class AutoencoderConfig:
    latent_dim: int = 32
    filters: int = 32
    learning_rate: float = 0.001
    kl_weight: float = 1.0        # VAE only: weight of the KL term against the summed squared error


@dataclass(frozen=True)
class QualityConfig:
    # The classifier whose penultimate ("features") layer defines the FCD feature space; "" disables FCD.
    classifier: str = "models:/visionlake-classifier@champion"
    samples: int = 10000          # real and generated images per FCD estimate
    every_epochs: int = 2         # quality metrics and a sample grid every N epochs, and after the last


@dataclass(frozen=True)
class GenerativeConfig:
    model: Literal["dcgan", "cdcgan", "vae", "autoencoder"] = "cdcgan"
    epochs: int = 5
    batch_size: int = 64          # per rank
    max_steps_per_epoch: int = 0  # 0 = the whole shard
    registered_prefix: str = "visionlake"  # registered as <prefix>-<model>
    gan: GanConfig = field(default_factory=GanConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def registered_name(self) -> str:
        return f"{self.registered_prefix}-{self.model}"

    @property
    def is_gan(self) -> bool:
        return self.model in ("dcgan", "cdcgan")


@dataclass(frozen=True)
class SyntheticConfig:
    model: str = "visionlake-cdcgan@champion"  # registered name, name@alias, name/version or a models:/ URI
    per_class: int = 1000
    batch_size: int = 256         # images generated per model call on a worker
    seed: int = 0


@dataclass(frozen=True)
class AnomalyConfig:
    # The default is the best mean AUROC of bench/anomaly_bench.py (one-class MNIST): VAE 0.956 vs autoencoder 0.934.
    method: Literal["autoencoder", "vae", "gan", "classifier"] = "vae"
    # Labels (names) that are normal; empty = the whole training split is normal.
    normal_labels: list[str] = field(default_factory=list)
    false_positive_rate: float = 0.05   # on held-out normal validation images
    # GAN scorer (f-AnoGAN style): weight of the discriminator-feature residual against the pixel residual.
    feature_weight: float = 1.0
    encoder_epochs: int = 5             # GAN scorer: epochs of the encoder trained to invert the frozen generator
    registered_model: str = "visionlake-anomaly"


@dataclass(frozen=True)
class ScoreConfig:
    dataset: str = "demo"
    table: Literal["images", "synthetic"] = "images"
    dataset_version: int = 0            # 0 = the latest committed version
    raw_uri: str = ""                   # a raw drop to ingest (ingest.* settings, into `dataset`) before scoring
    classifier: str = "models:/visionlake-classifier@champion"
    anomaly_model: str = "models:/visionlake-anomaly@champion"
    batch_size: int = 256
    top_k: int = 3
    anomaly_maps: bool = True           # per-pixel reconstruction-difference PNGs for flagged images
    max_anomaly_maps: int = 50


@dataclass(frozen=True)
class DemoConfig:
    images_per_class: int = 200
    seed: int = 7
    image_size: int = 40
    anomaly_epochs: int = 16            # the demo's short schedule for the anomaly VAE
    gan_epochs: int = 50                # ... and for the conditional GAN, which needs more steps to draw its classes
    quality_every_epochs: int = 4       # FCD and sample grid every N GAN epochs (generative.quality.every_epochs)
    generative_batch_size: int = 16     # per rank: ~700 training images give 22 steps per epoch instead of 5 at 64
    quality_samples: int = 1000         # images per FCD estimate in the demo (generative.quality.samples)
    # `visionlake demo` trains the anomaly model on these shapes only, so rings show up as the anomalies.
    normal_labels: list[str] = field(default_factory=lambda: ["circle", "cross", "square", "triangle"])
    # The HTML report of a demo run (pictures inline; open it without a server), relative to the working directory.
    report: str = "demo-report.html"


@dataclass(frozen=True)
class LogConfig:
    # Everything other libraries log (Spark's JVM, MLflow, petastorm, TensorFlow, Horovod's rank output) goes here,
    # appended; the console shows visionlake's own lines. Relative to the working directory, the job's workspace.
    file: str = "visionlake.log"
    verbose: bool = False         # the other libraries' lines on the console too (`--verbose`)


@dataclass(frozen=True)
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


# Keys holding local paths or URIs; relative local paths are made absolute against the working directory at load.
_PATH_KEYS = ("lake.root", "lake.commit_lock", "log.file", "demo.report", "tracking.artifact_root", "ingest.source.uri",
              "ingest.source.manifest", "train.checkpoint_root", "score.raw_uri")


DEFAULTS_LAYER = "defaults"  # the embedded local.yaml
OVERRIDE_LAYER = "override"
BUILT_IN_LAYER = "built-in"  # a key no layer sets: the dataclass default
# Mapping fields whose entries are separate settings, so a layer adds to them entry by entry. Other mappings (split
# ratios, split folder names) are one setting each, which a layer replaces whole: ratios must sum to 1.
_MERGED_MAPPINGS = ("spark.conf",)


@dataclass(frozen=True)
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
            f"{train.epochs} epochs x batch {train.batch_size}/rank, {train.reader} reader",
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
    config = _build(Config, raw, "")
    config = _absolutise_paths(config, Path(base_dir or os.getcwd()))
    if not config.train.checkpoint_root:
        config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, checkpoint_root=f"{config.lake.root.rstrip('/')}/_checkpoints"))
        sources["train.checkpoint_root"] = "derived from lake.root"
    validate(config)
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


def validate(config: Config) -> None:
    """Checks cross-field rules that types alone cannot express."""
    ratios = config.ingest.split.ratios
    if set(ratios) - {"train", "val", "test"}:
        raise ConfigError(f"ingest.split.ratios: only train/val/test are allowed, got {sorted(ratios)}")
    if any(r < 0 for r in ratios.values()) or abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ConfigError(f"ingest.split.ratios must be non-negative and sum to 1, got {ratios}")
    if not 0 <= config.ingest.split.val_from_train < 1:
        raise ConfigError("ingest.split.val_from_train must be in [0, 1)")
    if config.ingest.label.source == "regex":
        pattern = config.ingest.label.pattern or ""
        if "(?P<label>" not in pattern:
            raise ConfigError("ingest.label.pattern needs a named group, e.g. '(?P<label>[a-z]+)_\\d+\\.png'")
    if config.ingest.label.source == "manifest" and not config.ingest.source.manifest:
        raise ConfigError("ingest.label.source=manifest needs ingest.source.manifest (a CSV with path,label)")
    image = config.ingest.image
    if not (1 <= image.height <= 4096 and 1 <= image.width <= 4096):
        raise ConfigError("ingest.image.height/width must be between 1 and 4096")
    for key, value in (("pad_value", image.pad_value), ("alpha_background", image.alpha_background)):
        if not 0 <= value <= 255:
            raise ConfigError(f"ingest.image.{key} must be a grey level in 0..255, got {value}")
    if not 0 <= image.png_compress_level <= 9:
        raise ConfigError("ingest.image.png_compress_level must be in 0..9")
    if not 1 <= image.quality <= 100:
        raise ConfigError(f"ingest.image.quality must be a JPEG quality in 1..100 (95 is near-lossless), "
                          f"got {image.quality}")
    if config.ingest.limits.max_pixels <= 0 or config.ingest.limits.max_file_bytes <= 0:
        raise ConfigError("ingest.limits.max_pixels and max_file_bytes must be positive")
    train = config.train
    if train.epochs < 1 or train.batch_size < 1 or train.learning_rate <= 0:
        raise ConfigError("train.epochs and train.batch_size must be >= 1 and train.learning_rate > 0")
    if not 0 < train.augment.crop_fraction <= 1:
        raise ConfigError("train.augment.crop_fraction must be in (0, 1]")
    if not 0 <= train.synthetic_fraction < 1:
        raise ConfigError("train.synthetic_fraction must be in [0, 1): the share of each batch that is synthetic")
    generative = config.generative
    if generative.epochs < 1 or generative.batch_size < 1 or generative.quality.every_epochs < 1:
        raise ConfigError("generative.epochs, generative.batch_size and generative.quality.every_epochs must be >= 1")
    if generative.gan.discriminator_steps < 1 or not 0 < generative.gan.real_label <= 1:
        raise ConfigError("generative.gan.discriminator_steps must be >= 1 and generative.gan.real_label in (0, 1]")
    if generative.gan.class_loss_weight < 0:
        raise ConfigError("generative.gan.class_loss_weight must be >= 0 (0 turns the auxiliary class loss off)")
    if not 0 <= generative.gan.average_decay < 1:
        raise ConfigError("generative.gan.average_decay must be in [0, 1), e.g. 0.99 (0 registers the raw weights)")
    if min(generative.gan.latent_dim, generative.autoencoder.latent_dim, generative.quality.samples) < 1:
        raise ConfigError("generative latent sizes and generative.quality.samples must be >= 1")
    demo = config.demo
    for key in ("images_per_class", "anomaly_epochs", "gan_epochs", "quality_every_epochs", "generative_batch_size",
                "quality_samples"):
        if getattr(demo, key) < 1:
            raise ConfigError(f"demo.{key} must be >= 1, got {getattr(demo, key)}")
    if config.synthetic.per_class < 1 or config.synthetic.batch_size < 1:
        raise ConfigError("synthetic.per_class and synthetic.batch_size must be >= 1")
    if not 0 <= config.anomaly.false_positive_rate < 1:
        raise ConfigError("anomaly.false_positive_rate must be in [0, 1), e.g. 0.05")
    if config.score.batch_size < 1 or config.score.top_k < 1:
        raise ConfigError("score.batch_size and score.top_k must be >= 1")
    if not config.ingest.dataset.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"ingest.dataset {config.ingest.dataset!r}: use letters, digits, '-' and '_' only")
    if config.lake.retention_hours < 0:
        raise ConfigError(f"lake.retention_hours must be >= 0 (hours a superseded file is kept for readers of older "
                          f"versions, e.g. 168), got {config.lake.retention_hours}")
    lock = config.lake.commit_lock
    if lock and "://" in lock and not lock.startswith(("file:", "hdfs://")):
        raise ConfigError(f"lake.commit_lock={lock} must be on a file system with exclusive create: a local or NFS "
                          "path, or an hdfs:// folder (object stores have none; that is what the lock is for)")


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


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; known keys under "
                          f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(known))}")
    values = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in data.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise ConfigError(f"{key}: unsupported type {hint}")  # pragma: no cover - a programming error


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
    return _build(Config, tree, "")


def absolute_uri(location: str, base: Path) -> str:
    """Leaves URIs with a scheme (hdfs://, s3a://, file:/) alone; makes a local path absolute against ``base``."""
    if has_scheme(location):
        return location
    return str((base / location).resolve())
