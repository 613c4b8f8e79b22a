"""The decode stage as a pure function over pandas batches: raw records in, lake rows or rejections out.

Spark runs ``decode_records`` inside ``mapInPandas``; tests call it directly on hand-made frames.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterator, Optional

import pandas as pd

from visionlake.ingest import labels as L
from visionlake.config import IngestConfig
from visionlake.lake.images import RejectedImage, allowed_formats, normalise_image
from visionlake.lake.schema import DECODED_SCHEMA
from visionlake.ingest.sources import read_local_bytes


@dataclass(frozen=True)
class DecodePlan:
    """Everything a worker needs to turn raw bytes into lake rows (small and picklable)."""
    ingest: IngestConfig
    label_names: tuple[str, ...]

    @property
    def label_pattern(self) -> Optional[re.Pattern]:
        pattern = self.ingest.label.pattern
        return re.compile(pattern) if pattern else None


def raw_label(source_path: str, label_hint: Optional[str], plan: DecodePlan,
              pattern: Optional[re.Pattern]) -> Optional[str]:
    """The label name of one record before it is mapped to an index: the manifest's, else the path's."""
    if label_hint is not None and label_hint == label_hint and str(label_hint).strip():  # NaN-safe
        return str(label_hint).strip()
    split = plan.ingest.split
    return L.label_from_path(source_path, plan.ingest.label.source, pattern, plan.ingest.source.uri,
                             split.source_names if split.mode == "source" else ())


def discover_label_names(frame: pd.DataFrame, plan: DecodePlan) -> pd.DataFrame:
    """Distinct label names of a batch of (source_path, label_hint) rows, for building the label map."""
    pattern = plan.label_pattern
    names = {raw_label(p, h, plan, pattern) for p, h in zip(frame["source_path"], frame["label_hint"])}
    return pd.DataFrame({"label_name": sorted(n for n in names if n is not None)})


def decode_records(frame: pd.DataFrame, plan: DecodePlan) -> pd.DataFrame:
    """Decodes and normalises every record of a batch; each yields exactly one accepted or rejected row."""
    return _decoded_frame(list(_decode_each(frame, plan)))


def _decode_each(frame: pd.DataFrame, plan: DecodePlan) -> Iterator[dict]:
    ingest = plan.ingest
    pattern, formats = plan.label_pattern, allowed_formats(ingest.source.extensions)
    index_of = {name: i for i, name in enumerate(plan.label_names)}
    for record in frame.itertuples(index=False):
        content, error = record.content, record.error if isinstance(record.error, str) else None
        if content is None and error is None:
            try:
                content = read_local_bytes(record.source_path)
            except OSError as failure:
                error = f"unreadable: {failure.strerror or failure}"
        source_sha256 = hashlib.sha256(content).hexdigest() if content is not None else None
        if error is not None:
            reason, _, detail = error.partition(": ")
            yield dict(source_path=record.source_path, source_sha256=source_sha256, reason=reason, detail=detail)
            continue
        label_name = raw_label(record.source_path, record.label_hint, plan, pattern)
        if label_name is None or label_name not in index_of:
            detail = ("no label in the path or manifest" if label_name is None
                      else f"label {label_name!r} is not in ingest.label.names")
            yield dict(source_path=record.source_path, source_sha256=source_sha256, reason="no_label", detail=detail)
            continue
        try:
            image = normalise_image(bytes(content), ingest.image, ingest.limits, formats)
        except RejectedImage as rejection:
            yield dict(source_path=record.source_path, source_sha256=source_sha256, reason=rejection.reason,
                       detail=rejection.detail[:500])
            continue
        height, width, channels = image.shape
        yield dict(source_path=record.source_path, source_sha256=source_sha256, id=image.content_hash,
                   label=index_of[label_name], label_name=label_name,
                   split=_split_for(record, image.content_hash, plan), height=height, width=width,
                   channels=channels, image=image.encoded)


def _decoded_frame(rows: list[dict]) -> pd.DataFrame:
    result = pd.DataFrame({name: [row.get(name) for row in rows] for name in DECODED_SCHEMA.fieldNames()})
    for name in ("label", "height", "width", "channels"):
        result[name] = result[name].astype("Int32")
    return result


def _split_for(record, content_hash: str, plan: DecodePlan) -> str:
    split = plan.ingest.split
    hinted = record.split_hint if isinstance(record.split_hint, str) and record.split_hint else None
    if hinted is None and split.mode == "source":
        hinted = L.split_from_path(record.source_path, split.source_names)
    hinted = split.source_names.get(hinted.lower()) if hinted is not None else None
    if hinted is not None:
        return L.assign_source_split(hinted, content_hash, split.val_from_train)
    # No split in the source layout: fall back to the configured hash ratios rather than rejecting the image.
    return L.assign_split(content_hash, split.ratios)


# A task hands its decoded images to Spark in batches of about this many stored bytes, so its memory stays bounded
# whatever the image size and Spark's records-per-batch setting.
OUTPUT_BATCH_BYTES = 64 * 1024 * 1024


def decode_partition(batches: Iterator[pd.DataFrame], plan: DecodePlan,
                     max_batch_bytes: int = OUTPUT_BATCH_BYTES) -> Iterator[pd.DataFrame]:
    """mapInPandas body: ``decode_records`` over a task's batches, re-batched by stored bytes."""
    for batch in batches:
        rows, size = [], 0
        for row in _decode_each(batch, plan):
            rows.append(row)
            size += len(row.get("image") or b"")
            if size >= max_batch_bytes:
                yield _decoded_frame(rows)
                rows, size = [], 0
        if rows:
            yield _decoded_frame(rows)
