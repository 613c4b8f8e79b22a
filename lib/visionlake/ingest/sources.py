"""Reading raw image sources into one stream of raw records (``schema.RAW_SCHEMA``).

Sources: a folder tree or a single file on any Hadoop URI (Spark's ``binaryFile`` source), tar/tar.gz/zip archives
expanded in memory on the executors (never extracted to disk), and CSV manifests of ``path,label[,split]``.
Files too large to read and manifest entries with no file become records with an ``error`` instead of bytes, so
they reach the quarantine table like every other rejection.
"""
from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
from functools import partial
from typing import Iterator, Optional
from urllib.parse import unquote

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from visionlake.config import LimitsConfig, SourceConfig
from visionlake.ingest.labels import ARCHIVE_MEMBER_SEPARATOR, ARCHIVE_PATTERN
from visionlake.lake.schema import RAW_SCHEMA
from visionlake.lake.filesystem import HadoopStorage
from visionlake import uris

ARCHIVE_GLOB = "*.{tar,tar.gz,tgz,tar.bz2,tbz2,zip,TAR,TAR.GZ,TGZ,ZIP}"
# Spark's binaryFile source holds a whole file in one row, so it cannot read files of 2 GiB or more.
BINARY_FILE_ROW_LIMIT = 2 ** 31 - 1


class SourceError(ValueError):
    """The configured source cannot be read; the message says what to fix."""


def read_raw_records(spark: SparkSession, source: SourceConfig, limits: LimitsConfig,
                     already_processed: Optional[DataFrame]) -> DataFrame:
    """All raw records of the source that are not in ``already_processed`` (a frame of ``source_path``).

    Raises:
        SourceError: the source or manifest does not exist or is malformed.
    """
    storage = HadoopStorage(spark)
    local_root = disk_path(source.uri)
    if local_root is not None and not source.manifest:
        if not os.path.exists(local_root):
            raise SourceError(f"source {source.uri} does not exist; set ingest.source.uri to a folder or archive "
                              "that holds the raw images (or run `visionlake demo-data` for the demo set)")
        return _skip(_local_records(spark, local_root, source, limits), already_processed)
    if not storage.exists(source.uri):
        raise SourceError(f"source {source.uri} does not exist; set ingest.source.uri to a folder, archive or "
                          "Hadoop URI that holds the raw images (or run `visionlake demo-data` for the demo set)")
    listing = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(source.uri)
               .withColumnRenamed("path", "source_path"))
    empty_files = _empty_files(spark, listing)
    if source.manifest:
        records = _manifest_records(spark, storage, source.manifest, listing, empty_files, limits)
    elif source.expand_archives:
        # Archives are listed by their own glob so that plain files are not read twice. One task expands each
        # archive; the ingest's shuffle then spreads its members over all cores for decoding.
        archives = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                    .option("pathGlobFilter", ARCHIVE_GLOB).load(source.uri).withColumnRenamed("path", "source_path"))
        members = _expand_archives(archives, limits)
        plain = listing.filter(~F.col("source_path").rlike(ARCHIVE_PATTERN))
        records = _file_records(plain, limits).unionByName(members)
    else:
        records = _file_records(listing, limits)
    if empty_files is not None and not source.manifest:
        records = records.unionByName(_error_records(empty_files, "empty_file: 0 bytes"))
    return _skip(records, already_processed)


def disk_path(uri: str) -> Optional[str]:
    """The local file-system path of a ``file:`` URI or plain path; None for other schemes (hdfs://, s3a://...)."""
    if uri.startswith("file:"):
        return "/" + uris.local_path(uri).lstrip("/")
    return os.path.abspath(uri) if uris.is_local(uri) else None


def list_local_files(root: str) -> Iterator[tuple[str, int]]:
    """(path, size) of every file under ``root`` (or ``root`` itself), skipping hidden names as Hadoop does."""
    if os.path.isfile(root):
        yield root, os.path.getsize(root)
        return
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith((".", "_")):
                    continue
                if entry.is_dir(follow_symlinks=True):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=True):
                    yield entry.path, entry.stat().st_size


def _local_records(spark: SparkSession, root: str, source: SourceConfig, limits: LimitsConfig) -> DataFrame:
    """Local sources skip the JVM: the driver lists (a fast scandir that also sees zero-byte files) and the Python
    workers read the bytes themselves, which costs far less per file than Spark's binaryFile reader."""
    archive = re.compile(ARCHIVE_PATTERN)
    plain, archives = [], []
    for path, size in sorted(list_local_files(root)):
        uri = "file:" + path
        if source.expand_archives and archive.search(path):
            archives.append((uri, None, size, None, None, None))
        elif size == 0:
            plain.append((uri, None, 0, None, None, "empty_file: 0 bytes"))
        elif size > limits.max_file_bytes:
            plain.append((uri, None, size, None, None, f"file_too_large: {size} bytes > limit {limits.max_file_bytes}"))
        else:
            plain.append((uri, None, size, None, None, None))
    columns = [f.name for f in RAW_SCHEMA.fields]
    records = spark.createDataFrame(pd.DataFrame(plain, columns=columns), RAW_SCHEMA)
    if archives:
        members = spark.createDataFrame(pd.DataFrame(archives, columns=columns), RAW_SCHEMA).mapInPandas(
            partial(expand_archive_batches, max_member_bytes=limits.max_file_bytes), RAW_SCHEMA)
        records = records.unionByName(members)
    return records


def read_local_bytes(source_path: str) -> bytes:
    """Bytes of a ``file:`` record that the driver listed without reading (see ``_local_records``)."""
    with open(disk_path(source_path), "rb") as handle:
        return handle.read()


def _empty_files(spark: SparkSession, listing: DataFrame) -> Optional[DataFrame]:
    """Zero-byte files, which Spark's file scan skips without a word; None when there are none (the usual case)."""
    files = listing._jdf.inputFiles()
    if len(files) == listing.count():  # a metadata-only count: no file is read
        return None
    # One joined string crosses py4j instead of one call per file.
    joined = spark.sparkContext._jvm.org.apache.hadoop.util.StringUtils.join("\n", files)
    listed = spark.createDataFrame([(scan_path_form(uri),) for uri in joined.split("\n")], "source_path string")
    return listed.join(listing.select("source_path"), "source_path", "left_anti")


def scan_path_form(uri: str) -> str:
    """The form the binaryFile scan reports a path in: URI-decoded, ``file:/x`` rather than ``file:///x``."""
    decoded = unquote(uri)
    return "file:/" + decoded[len("file:///"):] if decoded.startswith("file:///") else decoded


def _error_records(files: DataFrame, error: str | Column, hints: tuple[Column, Column] = None) -> DataFrame:
    """Raw records without bytes for files rejected before decoding; ``error`` is "reason: detail"."""
    label_hint, split_hint = hints or (F.lit(None).cast("string"), F.lit(None).cast("string"))
    length = F.col("length") if "length" in files.columns else F.lit(0).cast("long")
    return files.select("source_path", F.lit(None).cast("binary").alias("content"), length.alias("length"),
                        label_hint.alias("label_hint"), split_hint.alias("split_hint"),
                        (F.lit(error) if isinstance(error, str) else error).alias("error"))


def _skip(records: DataFrame, already_processed: Optional[DataFrame]) -> DataFrame:
    if already_processed is None:
        return records
    return records.join(F.broadcast(already_processed), "source_path", "left_anti")


def _file_records(listing: DataFrame, limits: LimitsConfig, hints: tuple[Column, Column] = None) -> DataFrame:
    label_hint, split_hint = hints or (F.lit(None).cast("string"), F.lit(None).cast("string"))
    # `length <= limit` is pushed into the binaryFile reader, which checks it before reading a file: oversized
    # files are never loaded into memory.
    readable = listing.filter(F.col("length") <= F.lit(limits.max_file_bytes)).select(
        "source_path", "content", "length", label_hint.alias("label_hint"), split_hint.alias("split_hint"),
        F.lit(None).cast("string").alias("error"))
    # The complementary check must stay a post-scan filter over metadata: pushed down, it would make the reader
    # skip nearly every file, and Spark's FileScanRDD recurses once per skipped file (StackOverflowError on large
    # folders). greatest() is not translatable into a data-source filter, so it is evaluated after the scan.
    too_large = F.greatest(F.col("length"), F.lit(0)) > F.lit(limits.max_file_bytes)
    oversized = _error_records(listing.select("source_path", "length", *_hint_columns(listing)).filter(too_large),
                               F.concat(F.lit("file_too_large: "), F.col("length"),
                                        F.lit(f" bytes > limit {limits.max_file_bytes}")), hints)
    return readable.unionByName(oversized)


def _hint_columns(frame: DataFrame) -> list[str]:
    return [name for name in ("label_hint", "split_hint") if name in frame.columns]


def _expand_archives(archives: DataFrame, limits: LimitsConfig) -> DataFrame:
    readable = archives.filter(F.col("length") <= F.lit(BINARY_FILE_ROW_LIMIT)).select("source_path", "content")
    members = readable.mapInPandas(partial(expand_archive_batches, max_member_bytes=limits.max_file_bytes),
                                   RAW_SCHEMA)
    oversized = _error_records(archives.filter(F.col("length") > F.lit(BINARY_FILE_ROW_LIMIT)),
                               "file_too_large: archives are read whole and must be under 2 GiB; split or extract it")
    return members.unionByName(oversized)


def expand_archive_batches(batches: Iterator[pd.DataFrame], max_member_bytes: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: one raw record per regular archive member, or one error record per unreadable archive."""
    for batch in batches:
        rows = []
        for archive_path, content in zip(batch["source_path"], batch["content"]):
            try:
                data = bytes(content) if content is not None else read_local_bytes(archive_path)
            except OSError as error:
                rows.append((archive_path, None, 0, None, None, f"unreadable: {error.strerror}"))
                continue
            rows.extend(expand_archive(archive_path, data, max_member_bytes))
        yield pd.DataFrame(rows, columns=[f.name for f in RAW_SCHEMA.fields])


def expand_archive(archive_path: str, content: bytes, max_member_bytes: int) -> list[tuple]:
    """Members of a tar/tar.gz/tar.bz2/zip archive as raw-record tuples, read in memory."""
    def record(member: str, data: Optional[bytes], size: int, error: Optional[str] = None) -> tuple:
        return (f"{archive_path}{ARCHIVE_MEMBER_SEPARATOR}{member}", data, size, None, None, error)

    def too_large(size: int) -> str:
        return f"file_too_large: {size} bytes > limit {max_member_bytes}"

    records = []
    try:
        if archive_path.lower().endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                for info in archive.infolist():
                    if info.is_dir() or _is_hidden(info.filename):
                        continue
                    if info.file_size > max_member_bytes:
                        records.append(record(info.filename, None, info.file_size, too_large(info.file_size)))
                    else:
                        records.append(record(info.filename, archive.read(info), info.file_size))
        else:
            with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as archive:
                for info in archive:
                    if not info.isfile() or _is_hidden(info.name):
                        continue
                    if info.size > max_member_bytes:
                        records.append(record(info.name, None, info.size, too_large(info.size)))
                    else:
                        records.append(record(info.name, archive.extractfile(info).read(), info.size))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        # Members read before the damage are kept; the archive itself is quarantined for what could not be read.
        records.append((archive_path, None, len(content), None, None, f"unreadable: corrupt archive: {error}"))
    return records


def _is_hidden(member: str) -> bool:
    # Same convention as Hadoop/Spark listings: names starting with '.' or '_' are metadata, not data.
    return any(part.startswith((".", "_")) for part in member.split("/") if part)


def _manifest_records(spark: SparkSession, storage: HadoopStorage, manifest_uri: str, listing: DataFrame,
                      empty_files: Optional[DataFrame], limits: LimitsConfig) -> DataFrame:
    if not storage.exists(manifest_uri):
        raise SourceError(f"manifest {manifest_uri} does not exist; set ingest.source.manifest to a CSV file "
                          "with a header row path,label[,split]")
    manifest = spark.read.option("header", "true").csv(manifest_uri)
    missing = {"path", "label"} - set(manifest.columns)
    if missing:
        raise SourceError(f"manifest {manifest_uri} lacks column(s) {sorted(missing)}; its header must be "
                          f"path,label[,split] (found {manifest.columns})")
    folder = storage.qualify(manifest_uri).rsplit("/", 1)[0]
    scheme_root = storage.qualify("/").rstrip("/")  # e.g. "file:" or "hdfs://namenode:8020"
    path = F.trim(F.col("path"))
    resolved = (F.when(path.rlike(r"^[a-zA-Z][a-zA-Z0-9+.-]*:"), path)
                .when(path.startswith("/"), F.concat(F.lit(scheme_root), path))
                .otherwise(F.concat(F.lit(folder + "/"), F.regexp_replace(path, r"^\./", ""))))
    split_hint = F.col("split") if "split" in manifest.columns else F.lit(None).cast("string")
    entries = manifest.select(resolved.alias("source_path"), F.col("label").alias("label_hint"),
                              split_hint.alias("split_hint"))
    listed = listing.join(entries, "source_path", "inner")
    found = _file_records(listed, limits, (F.col("label_hint"), F.col("split_hint")))
    hints = (F.col("label_hint"), F.col("split_hint"))
    not_scanned = entries.join(listing.select("source_path"), "source_path", "left_anti")
    if empty_files is None:
        return found.unionByName(_error_records(not_scanned, "missing_file: listed in the manifest, not found", hints))
    empty = not_scanned.join(empty_files, "source_path", "left_semi")
    absent = not_scanned.join(empty_files, "source_path", "left_anti")
    return found.unionByName(_error_records(empty, "empty_file: 0 bytes", hints)).unionByName(
        _error_records(absent, "missing_file: listed in the manifest, not found", hints))
