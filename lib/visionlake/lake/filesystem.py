"""File-system operations on any Hadoop URI (file:, hdfs://, s3a://, ...): through the Spark driver's JVM
(``HadoopStorage``), and through pyarrow for Python code on executors and ranks (``pyarrow_filesystem``).

The lake's tables are Delta tables (``lake.delta``); what is left here is listing, moving and deleting folders
outside them (TFRecord shards, a lake in the format before Delta moved aside).
"""
from __future__ import annotations

import re

from pyspark.sql import SparkSession

from visionlake.uris import local_path


def pyarrow_filesystem(uri: str):
    """(pyarrow file system, path) for a lake URI as Spark writes it (``file:/x``, ``/x``, ``hdfs://``, ``s3a://``),
    for Python code on executors and ranks that reads or writes lake files without the JVM."""
    from pyarrow import fs as pafs

    if uri.startswith("file:") or uri.startswith("/"):
        return pafs.LocalFileSystem(), local_path(uri)
    return pafs.FileSystem.from_uri(re.sub(r"^s3a://", "s3://", uri))


class StorageError(RuntimeError):
    """A file-system operation failed; the message names the path."""


class HadoopStorage:
    """Thin wrapper over ``org.apache.hadoop.fs.FileSystem``: the only place the lake talks to storage directly."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _resolve(self, uri: str):
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(self._hadoop_conf), path

    def qualify(self, uri: str) -> str:
        """The fully qualified form Spark uses for this location (e.g. ``/data`` -> ``file:/data``)."""
        fs, path = self._resolve(uri)
        return fs.makeQualified(path).toString()

    def exists(self, uri: str) -> bool:
        fs, path = self._resolve(uri)
        return bool(fs.exists(path))

    def list_names(self, uri: str, directories_only: bool = False) -> list[str]:
        fs, path = self._resolve(uri)
        if not fs.exists(path):
            return []
        return sorted(status.getPath().getName() for status in fs.listStatus(path)
                      if not directories_only or status.isDirectory())

    def rename(self, source: str, target: str) -> None:
        """Moves a file or folder; fails (never overwrites) when ``target`` exists."""
        fs, source_path = self._resolve(source)
        _, target_path = self._resolve(target)
        if fs.exists(target_path):
            raise StorageError(f"cannot move {source} to {target}: the target exists")
        parent = target_path.getParent()
        if parent is not None and not fs.exists(parent):
            fs.mkdirs(parent)
        if not fs.rename(source_path, target_path):
            raise StorageError(f"cannot move {source} to {target}")

    def delete(self, uri: str) -> None:
        fs, path = self._resolve(uri)
        if fs.exists(path):
            fs.delete(path, True)
