"""A dataset's description (its "manifest"): the typed record each ``images`` commit carries, and its pure
construction and checks.

Ingest builds a whole description (``build_manifest``); the lake stores its JSON form in the commit's Delta
``userMetadata`` (``Manifest.to_json`` / ``from_json``) and, when reading it back, adds the versions of the tables
that go with it and the sections the generate and score jobs keep in their own tables' commits.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Optional

from visionlake.config import IngestConfig

MANIFEST_FORMAT = 1
_DIGEST_MODULUS = 2 ** 64


@dataclass(frozen=True)
class ImageSpec:
    """The settings that make a dataset's stored images what they are; fixed for the dataset's lifetime.

    The defaults are what manifests written before a setting existed imply for it.
    """
    mode: str
    height: int
    width: int
    channels: int
    resize: str
    invert: bool
    codec: str = "png"
    quality: Optional[int] = None
    tfrecord: bool = True

    @classmethod
    def from_settings(cls, settings: IngestConfig) -> "ImageSpec":
        image = settings.image
        return cls(mode=image.mode, height=image.height, width=image.width, channels=1 if image.mode == "L" else 3,
                   resize=image.resize, invert=image.invert, codec=image.codec,
                   quality=image.quality if image.codec == "jpeg" else None, tfrecord=settings.tfrecord)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    def stored_codec(self):
        """The codec the dataset's images are stored in (for writers that add images to it, e.g. synthetic)."""
        from visionlake.lake.images import StoredCodec

        return StoredCodec(self.codec, self.quality or StoredCodec.quality)


@dataclass(frozen=True)
class SourceRecord:
    """What was ingested: the source, its file count and an order-independent digest of its files."""
    uri: str
    manifest: Optional[str]
    files: int
    digest: str


@dataclass(frozen=True)
class Manifest:
    """One version of a dataset.

    ``version`` is the ``images`` table's Delta version; ``table_versions`` the version of each table that goes with
    it (None: the table has no rows of this generation). ``runs`` is the history of every ingest run, ``live_runs``
    the ingest runs whose rows ``images`` holds, ``generation`` the run that started what the table holds (the first
    ingest or the last full rebuild). ``synthetic`` and ``predictions`` are the records the generate and score jobs
    keep in their tables' commits.
    """
    dataset: str
    version: int
    run_id: str
    created_at: str
    image: ImageSpec
    label_names: tuple[str, ...]
    live_runs: tuple[str, ...] = ()
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantine: dict[str, int] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    tfrecord_compression: str = ""
    tfrecord_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: Optional[SourceRecord] = None
    runs: tuple[dict[str, Any], ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    synthetic: Optional[dict[str, Any]] = None
    predictions: Optional[dict[str, Any]] = None
    generation: str = ""
    table_versions: dict[str, Optional[int]] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    # Top-level keys this version does not know (a newer writer's): kept, and written back by every later commit.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label_map(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}

    def split_totals(self) -> dict[str, int]:
        return {split: sum(labels.values()) for split, labels in self.counts.items()}

    def version_params(self, tables: tuple[str, ...] = ()) -> dict[str, str]:
        """What an MLflow run records about the table versions it read (``versionAsOf`` reads them again)."""
        return {f"lake.{table}_version": str(self.table_versions.get(table))
                for table in dict.fromkeys(("images", *tables))}

    def to_json(self) -> dict[str, Any]:
        """The JSON document (``label_map`` included for readers outside Python; absent sections left out; the
        sections other jobs keep in their own tables are not part of it)."""
        document = dataclasses.asdict(dataclasses.replace(self, synthetic=None, predictions=None))
        document["label_map"] = self.label_map
        extra = document.pop("extra")
        return {**extra, **{key: value for key, value in document.items() if value is not None}}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> "Manifest":
        """The typed record of a stored document; fields added since it was written take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {key: value for key, value in document.items() if key in names}
        values["extra"] = {key: value for key, value in document.items() if key not in names | {"label_map"}}
        values["image"] = ImageSpec(**document["image"])
        values["source"] = SourceRecord(**document["source"]) if document.get("source") else None
        values["label_names"] = tuple(document["label_names"])
        values["live_runs"] = tuple(document.get("live_runs", ()))
        values["runs"] = tuple(document.get("runs", ()))
        values["tfrecord_files"] = {split: tuple(files) for split, files in document.get("tfrecord_files", {}).items()}
        return cls(**values)


def check_compatible(previous: Manifest, settings: IngestConfig) -> None:
    """An incremental run must normalise and store images exactly as the dataset's earlier runs did.

    Raises:
        ValueError: the image settings differ; the message names both and the way out.
    """
    wanted, stored = ImageSpec.from_settings(settings), previous.image
    if wanted != stored:
        wanted_fields, stored_fields = dataclasses.asdict(wanted), dataclasses.asdict(stored)
        changed = sorted(key for key in wanted_fields if wanted_fields[key] != stored_fields[key])
        raise ValueError(f"dataset {previous.dataset!r} was built with image settings {stored_fields}; this run "
                         f"asks for {wanted_fields} (differs in {', '.join(changed)}). Use another ingest.dataset "
                         "name, or set ingest.full_rebuild=true to rebuild it with the new settings")


def version_after(previous: Optional[Manifest]) -> int:
    """The number of the version that follows ``previous`` (1 for a dataset's first commit)."""
    return (previous.version if previous else 0) + 1


def combine_counts(earlier: dict[str, dict[str, int]], added: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    combined = {split: dict(labels) for split, labels in earlier.items()}
    for split, labels in added.items():
        target = combined.setdefault(split, {})
        for name, count in labels.items():
            target[name] = target.get(name, 0) + count
    return {split: dict(sorted(labels.items())) for split, labels in sorted(combined.items())}


def build_manifest(*, previous: Optional[Manifest], base: Optional[Manifest], settings: IngestConfig,
                   run_id: str, created_at: dt.datetime, label_names: list[str], added: dict[str, dict[str, int]],
                   quarantined: dict[str, int], shards: list[dict[str, Any]], fingerprint: tuple[int, int],
                   tables: dict[str, str], compression: str, config: dict[str, Any]) -> Manifest:
    """An ingest run's version: ``base`` (None for a first run or a full rebuild) plus this run's output.

    ``previous`` only numbers the version and keeps the run history; ``base`` holds the contents carried forward.
    """
    files, digest = fingerprint
    earlier_files, earlier_digest = (base.source.files, int(base.source.digest, 16)) if base else (0, 0)
    new_files: dict[str, list[str]] = {}
    for shard in shards:
        relative = f"tfrecord/run_id={run_id}/split={shard['split']}/{shard['file']}"
        new_files.setdefault(shard["split"], []).append(relative)
    tfrecord_files = dict(base.tfrecord_files) if base else {}
    for split, names in new_files.items():
        tfrecord_files[split] = tuple(tfrecord_files.get(split, ())) + tuple(sorted(names))
    quarantine_total = dict(base.quarantine) if base else {}
    for reason, count in quarantined.items():
        quarantine_total[reason] = quarantine_total.get(reason, 0) + count
    run = {"run_id": run_id, "created_at": created_at.isoformat(), "full_rebuild": settings.full_rebuild,
           "added": added, "quarantined": dict(sorted(quarantined.items())), "source_files": files}
    return Manifest(
        dataset=settings.dataset,
        version=version_after(previous),
        run_id=run_id,
        created_at=created_at.isoformat(),
        live_runs=(base.live_runs if base else ()) + (run_id,),
        image=ImageSpec.from_settings(settings),
        label_names=tuple(label_names),
        counts=combine_counts(base.counts if base else {}, added),
        quarantine=dict(sorted(quarantine_total.items())),
        tables=tables,
        tfrecord_compression=compression,
        tfrecord_files=tfrecord_files,
        source=SourceRecord(uri=settings.source.uri, manifest=settings.source.manifest, files=earlier_files + files,
                            digest=f"{(earlier_digest + digest) % _DIGEST_MODULUS:016x}"),
        runs=(previous.runs if previous else ()) + (run,),
        config=config,
        # Generated images and scoring results belong to a generation: they survive incremental ingests, and a full
        # rebuild starts a new one.
        generation=base.generation if base else run_id,
    )
