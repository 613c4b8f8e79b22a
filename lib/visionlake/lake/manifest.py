"""Pure construction and checks of a dataset's manifest (the JSON document each commit writes)."""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from visionlake.config import IngestConfig

MANIFEST_FORMAT = 1
_CARRIED = ("synthetic", "predictions")  # sections written by the generate and score jobs
_DIGEST_MODULUS = 2 ** 64


# What manifests written before a setting existed imply for it.
_IMAGE_SPEC_DEFAULTS = {"codec": "png", "quality": None, "tfrecord": True}


def image_spec(settings: IngestConfig) -> dict[str, Any]:
    """The settings that make a dataset's stored images what they are; fixed for the dataset's lifetime."""
    image = settings.image
    return {"mode": image.mode, "height": image.height, "width": image.width,
            "channels": 1 if image.mode == "L" else 3, "resize": image.resize, "invert": image.invert,
            "codec": image.codec, "quality": image.quality if image.codec == "jpeg" else None,
            "tfrecord": settings.tfrecord}


def stored_image_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest's image spec, with the defaults of settings added since it was written."""
    return {**_IMAGE_SPEC_DEFAULTS, **manifest["image"]}


def stored_codec(manifest: dict[str, Any]):
    """The codec the dataset's images are stored in (for writers that add images to it, e.g. synthetic)."""
    from visionlake.lake.images import StoredCodec

    spec = stored_image_spec(manifest)
    return StoredCodec(spec["codec"], spec["quality"] or StoredCodec.quality)


def check_compatible(previous: dict[str, Any], settings: IngestConfig) -> None:
    """An incremental run must normalise and store images exactly as the dataset's earlier runs did.

    Raises:
        ValueError: the image settings differ; the message names both and the way out.
    """
    wanted, stored = image_spec(settings), stored_image_spec(previous)
    if wanted != stored:
        changed = sorted(key for key in wanted if wanted[key] != stored.get(key))
        raise ValueError(f"dataset {previous['dataset']!r} was built with image settings {stored}; this run asks "
                         f"for {wanted} (differs in {', '.join(changed)}). Use another ingest.dataset name, or "
                         "set ingest.full_rebuild=true to rebuild it with the new settings")


def version_after(previous: Optional[dict[str, Any]]) -> int:
    """The number of the version that follows ``previous`` (1 for a dataset's first commit)."""
    return (previous["version"] if previous else 0) + 1


def next_version(previous: dict[str, Any], *, run: dict[str, Any], created_at: dt.datetime, live_runs: list[str],
                 tables: dict[str, str], **sections: Any) -> dict[str, Any]:
    """The manifest a job other than ingest commits (synthetic data, predictions): ``previous`` with the version and
    time advanced, ``run`` appended to the history, ``live_runs`` and ``tables`` as given, and ``sections`` (the
    job's own part of the document) replaced."""
    return {**previous, "version": version_after(previous), "created_at": created_at.isoformat(),
            "live_runs": live_runs, "tables": {**previous["tables"], **tables},
            "runs": previous["runs"] + [run], **sections}


def combine_counts(earlier: dict[str, dict[str, int]], added: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    combined = {split: dict(labels) for split, labels in earlier.items()}
    for split, labels in added.items():
        target = combined.setdefault(split, {})
        for name, count in labels.items():
            target[name] = target.get(name, 0) + count
    return {split: dict(sorted(labels.items())) for split, labels in sorted(combined.items())}


def split_totals(manifest: dict[str, Any]) -> dict[str, int]:
    return {split: sum(labels.values()) for split, labels in manifest["counts"].items()}


def build_manifest(*, previous: Optional[dict[str, Any]], base: Optional[dict[str, Any]], settings: IngestConfig,
                   run_id: str, created_at: dt.datetime, label_names: list[str], added: dict[str, dict[str, int]],
                   quarantined: dict[str, int], shards: list[dict[str, Any]], fingerprint: tuple[int, int],
                   tables: dict[str, str], compression: str, config: dict[str, Any]) -> dict[str, Any]:
    """The next version's manifest: ``base`` (None for a first run or a full rebuild) plus this run's output.

    ``previous`` only numbers the version and keeps the run history; ``base`` holds the contents carried forward.
    """
    files, digest = fingerprint
    earlier_files, earlier_digest = (base["source"]["files"], int(base["source"]["digest"], 16)) if base else (0, 0)
    new_files = {}
    for shard in shards:
        relative = f"tfrecord/split={shard['split']}/run_id={run_id}/{shard['file']}"
        new_files.setdefault(shard["split"], []).append(relative)
    tfrecord_files = {split: list(names) for split, names in (base or {}).get("tfrecord_files", {}).items()}
    for split, names in new_files.items():
        tfrecord_files[split] = tfrecord_files.get(split, []) + sorted(names)
    quarantine_total = dict((base or {}).get("quarantine", {}))
    for reason, count in quarantined.items():
        quarantine_total[reason] = quarantine_total.get(reason, 0) + count
    run = {"run_id": run_id, "created_at": created_at.isoformat(), "full_rebuild": settings.full_rebuild,
           "added": added, "quarantined": dict(sorted(quarantined.items())), "source_files": files}
    return {
        "format": MANIFEST_FORMAT,
        "dataset": settings.dataset,
        "version": version_after(previous),
        "run_id": run_id,
        "created_at": created_at.isoformat(),
        "live_runs": ((base["live_runs"] if base else []) + [run_id]),
        "image": image_spec(settings),
        "label_names": label_names,
        "label_map": {name: index for index, name in enumerate(label_names)},
        "counts": combine_counts(base["counts"] if base else {}, added),
        "quarantine": dict(sorted(quarantine_total.items())),
        # Tables other jobs added (synthetic, predictions) stay listed; their runs stay live through live_runs.
        "tables": {**{k: v for k, v in (base or {}).get("tables", {}).items() if k in _CARRIED}, **tables},
        "tfrecord_compression": compression,
        "tfrecord_files": tfrecord_files,
        "source": {"uri": settings.source.uri, "manifest": settings.source.manifest, "files": earlier_files + files,
                   "digest": f"{(earlier_digest + digest) % _DIGEST_MODULUS:016x}"},
        "runs": (previous["runs"] if previous else []) + [run],
        "config": config,
        # Generated images and scoring results survive incremental ingests; a full rebuild starts afresh.
        **{k: base[k] for k in _CARRIED if base and k in base},
    }
