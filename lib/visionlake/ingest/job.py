"""The ingest job: raw images -> normalised ``images`` Delta table, TFRecord shards, ``quarantine`` Delta table,
and the dataset's description committed with the images.

Every listed source file ends as exactly one ``images`` row or one ``quarantine`` row. Re-runs skip files already
in the dataset (by source path), so re-running on the same input adds nothing and new files are appended; pixels
already present under another path are quarantined as ``duplicate``, and the ``images`` commit inserts only ids the
table lacks, so concurrent runs cannot add one twice. ``ingest.full_rebuild`` re-reads everything and replaces the
dataset's contents in one commit per table (readers of older versions keep reading them until ``visionlake
vacuum``).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Optional

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from visionlake.lake import manifest as M
from visionlake.config import Config
from visionlake.ingest.decode import DecodePlan, decode_partition, discover_label_names
from visionlake.ingest.labels import merge_label_names
from visionlake.lake.store import Lake, grouped_by_split, in_shuffled_order, new_run_id
from visionlake.progress import phase
from visionlake.lake.schema import DECODED_SCHEMA, IMAGE_FIELDS, QUARANTINE_FIELDS
from visionlake.ingest.sources import read_raw_records
from visionlake.lake.tfrecord import write_shards

log = logging.getLogger(__name__)

_SHARD_RESULT_SCHEMA = "split string, file string, records long"
_DUPLICATE_SCHEMA = "source_path string, split string, label_name string, detail string"


class IngestError(RuntimeError):
    """The ingest cannot proceed with this configuration and lake; the message says what to do."""


@dataclass
class IngestSummary:
    dataset: str
    version: int
    run_id: str
    added: dict[str, dict[str, int]]
    quarantined: dict[str, int]
    total: dict[str, int]
    paths: dict[str, str]
    seconds: float
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def images_added(self) -> int:
        return sum(sum(labels.values()) for labels in self.added.values())

    def report(self) -> str:
        lines = [f"ingest of dataset {self.dataset!r}: version {self.version}, run {self.run_id}, "
                 f"{self.seconds:.1f}s",
                 f"  added {self.images_added} image(s); dataset now holds "
                 + ", ".join(f"{split}={n}" for split, n in sorted(self.total.items()))]
        for split, labels in sorted(self.added.items()):
            lines.append(f"  {split:5s} +" + ", ".join(f"{name}={n}" for name, n in labels.items()))
        quarantined = sum(self.quarantined.values())
        lines.append(f"  quarantined {quarantined} file(s)" + (": " + ", ".join(
            f"{reason}={n}" for reason, n in sorted(self.quarantined.items())) if quarantined else ""))
        for example in self.examples:
            lines.append(f"    {example['reason']}: {example['source_path']} ({example['detail']})")
        lines += [f"  {name}: {path}" for name, path in self.paths.items()]
        return "\n".join(lines)


def ingest(spark: SparkSession, config: Config) -> IngestSummary:
    """Runs one ingest of ``config.ingest`` into the lake at ``config.lake.root`` and commits a new version.

    Raises:
        SourceError: the source or its manifest is missing or malformed.
        IngestError: the configuration conflicts with the dataset already in the lake.
        LakeError: the dataset is in the table format before Delta Lake (and this is not a full rebuild), or a
            table cannot be written.
    """
    started = time.perf_counter()
    settings = config.ingest
    lake = Lake(spark, config.lake.root, commit_lock=config.lake.commit_lock, settings=config.lake)
    paths = lake.paths(settings.dataset)
    if settings.full_rebuild:
        lake.retire_legacy(settings.dataset)
    previous = lake.read_manifest(settings.dataset)
    if previous is not None and not settings.full_rebuild:
        try:
            M.check_compatible(previous, settings)
        except ValueError as error:
            raise IngestError(str(error)) from None
    base = None if settings.full_rebuild else previous
    run_id, now = new_run_id(), dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    partitions = config.lake.write_partitions or spark.sparkContext.defaultParallelism
    log.info("ingest %s -> %s (run %s, %d partitions)", settings.source.uri, paths.base, run_id, partitions)

    existing_images = lake.read_table(settings.dataset, "images", base) if base else None
    processed = None
    if base:
        # The latest quarantine, not the description's: a run that died between its quarantine and images commits
        # has its rejections skipped, and only its images decoded again.
        processed = existing_images.select("source_path").unionByName(
            lake.read_latest(settings.dataset, "quarantine").select("source_path"))
    with phase("listing + labels", spark):
        raw = read_raw_records(spark, settings.source, settings.limits, processed)
        label_names = _resolve_label_names(raw, settings, base)
    plan = DecodePlan(settings, tuple(label_names))
    # The lake's row order is set here, on the records (paths, or bytes for archives and remote sources), so the
    # decoded images never need a shuffle of their own and every decode task gets a fair share of the work.
    decoded = (in_shuffled_order(raw, partitions, by="source_path")
               .mapInPandas(partial(decode_partition, plan=plan), DECODED_SCHEMA)
               .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        with phase(f"decode {settings.source.uri} + find duplicates", spark):
            duplicates = _find_duplicates(decoded, existing_images)
        with phase("statistics", spark):
            added, quarantined, examples, fingerprint = summarise_statistics(_group_statistics(decoded), duplicates)
        if previous is not None and not settings.full_rebuild and fingerprint[0] == 0:
            log.info("nothing new under %s: dataset %r stays at version %d", settings.source.uri, settings.dataset,
                     previous.version)
            return IngestSummary(dataset=settings.dataset, version=previous.version, run_id=run_id, added={},
                                 quarantined={}, total=previous.split_totals(),
                                 paths=_summary_paths(previous, paths), seconds=time.perf_counter() - started)
        images, quarantine = _final_tables(spark, decoded, duplicates, now)
        images = grouped_by_split(images, by="source_path")
        # Shards first: the images commit lists them, and shards of a run that dies before it are vacuumed.
        with phase("TFRecord shards", spark):
            shards = _write_tfrecords(images, paths.tfrecord_run(run_id), config) if settings.tfrecord else []
        manifest = M.build_manifest(
            previous=previous, base=base, settings=settings, run_id=run_id, created_at=now, label_names=label_names,
            added=added, quarantined=quarantined, shards=shards, fingerprint=fingerprint,
            tables={name: paths.table(name) for name in ("images", "quarantine", "tfrecord")},
            compression=config.lake.tfrecord_compression, config=config.to_dict())
        with phase("images and quarantine tables", spark):
            # One quarantine file per run; repartition, not coalesce, so the filter over the decoded images stays
            # parallel and only the rejected rows move.
            manifest = lake.commit_ingest(manifest, images, quarantine.repartition(1) if quarantined else None,
                                          full_rebuild=settings.full_rebuild,
                                          based_on=previous.version if previous else 0)
    finally:
        decoded.unpersist()
    version = manifest.version
    summary = IngestSummary(
        dataset=settings.dataset, version=version, run_id=run_id, added=added,
        quarantined=quarantined, total=manifest.split_totals(),
        paths=_summary_paths(manifest, paths),
        seconds=time.perf_counter() - started, examples=examples)
    log.info("%s", summary.report())
    return summary


def _summary_paths(manifest: M.Manifest, paths) -> dict[str, str]:
    return dict(manifest.tables)


def _resolve_label_names(raw: DataFrame, settings, base: Optional[M.Manifest]) -> list[str]:
    configured = list(settings.label.names)
    known = list(base.label_names) if base else []
    if configured:
        if known and configured[:len(known)] != known:
            raise IngestError(f"ingest.label.names {configured} would renumber the labels of dataset "
                              f"{settings.dataset!r} ({known}); append new names at the end, or set "
                              "ingest.full_rebuild=true")
        return configured
    plan = DecodePlan(settings, ())
    discovered = (raw.select("source_path", "label_hint")
                  .mapInPandas(lambda batches: (discover_label_names(b, plan) for b in batches), "label_name string")
                  .distinct().collect())
    return merge_label_names(known, [row.label_name for row in discovered])


def _final_tables(spark: SparkSession, decoded: DataFrame, duplicates: list[tuple],
                  now) -> tuple[DataFrame, DataFrame]:
    """The run's ``images`` rows (accepted, not duplicates) and ``quarantine`` rows (rejected and duplicates)."""
    accepted = decoded.filter(F.col("reason").isNull())
    rejected = decoded.filter(F.col("reason").isNotNull()).select("source_path", "reason", "detail", "source_sha256")
    if duplicates:
        duplicate_paths = F.broadcast(spark.createDataFrame(duplicates, _DUPLICATE_SCHEMA))
        accepted = accepted.join(duplicate_paths.select("source_path"), "source_path", "left_anti")
        rejected = rejected.unionByName(
            decoded.drop("detail").join(duplicate_paths.select("source_path", "detail"), "source_path")
            .select("source_path", F.lit("duplicate").alias("reason"), "detail", "source_sha256"))
    images = accepted.select(*[f.name for f in IMAGE_FIELDS if f.name != "ingested_at"], "split",
                             F.lit(now).cast("timestamp").alias("ingested_at"))
    quarantine = rejected.select(*[f.name for f in QUARANTINE_FIELDS if f.name != "quarantined_at"],
                                 F.lit(now).cast("timestamp").alias("quarantined_at"))
    return images, quarantine


def _find_duplicates(decoded: DataFrame, existing_images: Optional[DataFrame]) -> list[tuple]:
    """(source_path, split, label_name, detail) of accepted images whose pixels were seen before: in the lake, or
    under an alphabetically earlier path in this run. Works on ids and paths only, so no image bytes are shuffled;
    the result is small (usually empty) and is collected."""
    accepted = decoded.filter(F.col("reason").isNull()).select("id", "source_path", "split", "label_name")
    repeated = (accepted.groupBy("id").agg(F.min("source_path").alias("first_path"), F.count(F.lit(1)).alias("n"))
                .filter(F.col("n") > 1))
    duplicates = accepted.join(repeated, "id").filter(F.col("source_path") != F.col("first_path")).select(
        "source_path", "split", "label_name", F.concat(F.lit("same pixels as "), "first_path").alias("detail"))
    if existing_images is not None:
        known = existing_images.select("id", F.col("source_path").alias("existing_path")).dropDuplicates(["id"])
        duplicates = accepted.join(F.broadcast(known), "id").select(
            "source_path", "split", "label_name", F.concat(F.lit("same pixels as "), "existing_path").alias("detail")
        ).unionByName(duplicates).dropDuplicates(["source_path"])
    return [tuple(row) for row in duplicates.collect()]


def _group_statistics(decoded: DataFrame) -> list[dict[str, Any]]:
    """One small aggregate for the manifest and summary: counts per (reason, split, label), an example per group,
    and the order-independent digest of the (path, sha256) pairs read."""
    pair_hash = F.conv(F.substring(F.sha2(F.concat_ws("|", "source_path", F.coalesce("source_sha256", F.lit(""))),
                                          256), 1, 15), 16, 10).cast("decimal(38,0)")
    return [row.asDict() for row in decoded.groupBy("reason", "split", "label_name").agg(
        F.count(F.lit(1)).alias("count"), F.sum(pair_hash).alias("digest"),
        F.first("source_path").alias("example_path"), F.first("detail").alias("example_detail")).collect()]


def summarise_statistics(stats: list[dict[str, Any]], duplicates: list[tuple]):
    """Pure: (added per split and label, quarantined per reason, example rejections, (files, digest))."""
    added: dict[str, dict[str, int]] = {}
    quarantined: dict[str, int] = {}
    examples, files, digest = [], 0, 0
    for group in stats:
        files += group["count"]
        digest += int(group["digest"] or 0)
        if group["reason"] is None:
            labels = added.setdefault(group["split"], {})
            labels[group["label_name"]] = labels.get(group["label_name"], 0) + group["count"]
        else:
            quarantined[group["reason"]] = quarantined.get(group["reason"], 0) + group["count"]
            examples.append({"reason": group["reason"], "source_path": group["example_path"],
                             "detail": group["example_detail"]})
    for source_path, split, label_name, detail in duplicates:
        added[split][label_name] -= 1
        if "duplicate" not in quarantined:
            examples.append({"reason": "duplicate", "source_path": source_path, "detail": detail})
        quarantined["duplicate"] = quarantined.get("duplicate", 0) + 1
    added = {split: {name: n for name, n in sorted(labels.items()) if n} for split, labels in sorted(added.items())}
    return ({split: labels for split, labels in added.items() if labels}, dict(sorted(quarantined.items())),
            examples[:8], (files, digest))

def _write_tfrecords(images: DataFrame, folder: str, config: Config) -> list[dict[str, Any]]:
    log.info("writing TFRecord shards ...")
    writer = partial(write_shards, staging_uri=folder, compression=config.lake.tfrecord_compression)
    rows = (images.select("id", "label", "split", "height", "width", "channels", "image")
            .mapInPandas(writer, _SHARD_RESULT_SCHEMA).collect())
    return [row.asDict() for row in rows]
