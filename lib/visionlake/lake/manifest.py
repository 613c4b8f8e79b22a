"""A dataset's manifest: the typed record each commit writes as JSON, and its pure construction and checks.

Ingest builds a whole version (``build_manifest``); the jobs that add to a dataset (synthetic data, predictions)
derive the next one from the latest (``Manifest.next_version``). The lake reads and writes the JSON form
(``Manifest.from_json`` / ``to_json``); everything else works with the typed record.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Optional

from visionlake.config import IngestConfig

MANIFEST_FORMAT = 1
_CARRIED = ("synthetic", "predictions")  # sections written by the generate and score jobs
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
    """One committed version of a dataset.

    ``runs`` is the history of every run that committed (ingest, synthetic, predictions; each kind records its own
    details), ``live_runs`` the runs whose rows readers see. ``synthetic`` and ``predictions`` are the sections the
    generate and score jobs own.
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
    committed_at: Optional[str] = None
    superseded: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    # Top-level keys this version does not know (a newer writer's): kept, and written back by every later commit.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label_map(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}

    def split_totals(self) -> dict[str, int]:
        return {split: sum(labels.values()) for split, labels in self.counts.items()}

    def committed_runs(self) -> set[str]:
        """Every run some committed version listed: the run history (kept across full rebuilds) and the live runs."""
        return {run["run_id"] for run in self.runs} | set(self.live_runs)

    def next_version(self, *, run: dict[str, Any], created_at: dt.datetime, live_runs: list[str],
                     tables: dict[str, str], **sections: Any) -> "Manifest":
        """The manifest a job other than ingest commits (synthetic data, predictions): this one with the version and
        time advanced, ``run`` appended to the history, ``live_runs`` and ``tables`` as given, and ``sections`` (the
        job's own part of the document) replaced."""
        return dataclasses.replace(self, version=version_after(self), created_at=created_at.isoformat(),
                                   live_runs=tuple(live_runs), tables={**self.tables, **tables},
                                   runs=self.runs + (run,), committed_at=None, **sections)

    def to_json(self) -> dict[str, Any]:
        """The JSON document (``label_map`` included for readers outside Python; absent sections left out)."""
        document = dataclasses.asdict(self)
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
        relative = f"tfrecord/split={shard['split']}/run_id={run_id}/{shard['file']}"
        new_files.setdefault(shard["split"], []).append(relative)
    tfrecord_files = dict(base.tfrecord_files) if base else {}
    for split, names in new_files.items():
        tfrecord_files[split] = tuple(tfrecord_files.get(split, ())) + tuple(sorted(names))
    quarantine_total = dict(base.quarantine) if base else {}
    for reason, count in quarantined.items():
        quarantine_total[reason] = quarantine_total.get(reason, 0) + count
    run = {"run_id": run_id, "created_at": created_at.isoformat(), "full_rebuild": settings.full_rebuild,
           "added": added, "quarantined": dict(sorted(quarantined.items())), "source_files": files}
    # Tables other jobs added (synthetic, predictions) stay listed; their runs stay live through live_runs.
    carried_tables = {name: path for name, path in base.tables.items() if name in _CARRIED} if base else {}
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
        tables={**carried_tables, **tables},
        tfrecord_compression=compression,
        tfrecord_files=tfrecord_files,
        source=SourceRecord(uri=settings.source.uri, manifest=settings.source.manifest, files=earlier_files + files,
                            digest=f"{(earlier_digest + digest) % _DIGEST_MODULUS:016x}"),
        runs=(previous.runs if previous else ()) + (run,),
        config=config,
        # Generated images and scoring results survive incremental ingests; a full rebuild starts afresh.
        synthetic=base.synthetic if base else None,
        predictions=base.predictions if base else None,
    )
