"""File-system operations on any Hadoop URI (file:, hdfs://, s3a://, ...) through the Spark driver's JVM.

``publish_text`` is the lake's commit primitive: it creates a file whole, and only if it is absent. How exclusive that
is depends on the file system (``exclusive_create``):

- ``file:`` (a local disk, or NFS mounted on the driver): the text goes to a temporary file, then ``os.link`` gives it
  its name. ``link(2)`` fails when the name exists, atomically, also on NFS; readers never see a partial file.
- ``hdfs://``: the text goes to a temporary file, then ``FileContext.rename(..., Options.Rename.NONE)``, which the
  NameNode runs as one atomic rename that fails when the target exists. (``FileSystem.create(path, false)`` is
  atomic too, but HDFS lists the file, empty or partly written, before it is closed.)
- Object stores (``s3a://``, ``gs://``, ``abfs://``, ...) and anything else: ``FileSystem.create(path, false)``, which
  appears whole when closed (one PUT) but checks for an existing file separately from creating it, so two writers
  can both succeed. The lake warns at each commit there, and offers ``lake.commit_lock``.
"""
from __future__ import annotations

import errno
import json
import os
import re
import uuid
from typing import Optional

from pyspark.sql import SparkSession

from visionlake.uris import local_path

# File systems whose publish_text is exclusive, by URI scheme -> how (see the module docstring).
EXCLUSIVE_CREATE = {"file": "hard link", "hdfs": "atomic rename"}
_TEMPORARY_PREFIX = ".tmp-"


def pyarrow_filesystem(uri: str):
    """(pyarrow file system, path) for a lake URI as Spark writes it (``file:/x``, ``/x``, ``hdfs://``, ``s3a://``),
    for Python code on executors and ranks that reads or writes lake files without the JVM."""
    from pyarrow import fs as pafs

    if uri.startswith("file:") or uri.startswith("/"):
        return pafs.LocalFileSystem(), local_path(uri)
    return pafs.FileSystem.from_uri(re.sub(r"^s3a://", "s3://", uri))


class StorageError(RuntimeError):
    """A file-system operation failed; the message names the path."""


class TargetExistsError(StorageError):
    """An exclusive create found the file already there: another writer created it first."""


def is_temporary(name: str) -> bool:
    """A file ``publish_text`` writes before it names the result (with Hadoop's ``.crc`` companion)."""
    return name.startswith(_TEMPORARY_PREFIX) or name.startswith("." + _TEMPORARY_PREFIX)


def create_local_file_exclusively(path: str, text: str) -> None:
    """Creates ``path`` holding ``text``, whole, only if no file has that name; atomic on local disks and NFS.

    The text is written and synced to a temporary file in the same folder, which ``os.link`` then names ``path``:
    the link fails, atomically, when the name exists. Where hard links are not supported, the file is created with
    ``O_CREAT | O_EXCL`` (exclusive too, but readers may see it before its content is complete).

    Raises:
        TargetExistsError: ``path`` exists (another writer created it).
        StorageError: the folder cannot be written.
    """
    folder = os.path.dirname(path)
    data = text.encode("utf-8")
    try:
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f"{_TEMPORARY_PREFIX}{uuid.uuid4().hex}")
        with open(temporary, "xb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror}; check permissions and free space") from error
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise TargetExistsError(f"{path} exists: another writer created it first") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise StorageError(f"cannot create {path}: {error.strerror}") from error
        _write_exclusively(path, data)
    finally:
        os.unlink(temporary)
    _sync_folder(folder)


def _write_exclusively(path: str, data: bytes) -> None:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise TargetExistsError(f"{path} exists: another writer created it first") from None
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def _sync_folder(folder: str) -> None:
    """Makes a new name in ``folder`` durable (best effort: not every file system lets a folder be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class HadoopStorage:
    """Thin wrapper over ``org.apache.hadoop.fs.FileSystem``: the only place the lake talks to storage directly."""

    def __init__(self, spark: SparkSession):
        self._jvm = spark.sparkContext._jvm
        self._gateway = spark.sparkContext._gateway
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

    def is_dir(self, uri: str) -> bool:
        fs, path = self._resolve(uri)
        return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())

    def mkdirs(self, uri: str) -> None:
        fs, path = self._resolve(uri)
        if not fs.mkdirs(path):
            raise StorageError(f"cannot create folder {uri}; check permissions")

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

    def read_text(self, uri: str) -> str:
        fs, path = self._resolve(uri)
        stream = fs.open(path)
        try:
            return self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def write_text(self, uri: str, text: str, overwrite: bool = False) -> None:
        fs, path = self._resolve(uri)
        stream = fs.create(path, overwrite)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def scheme(self, uri: str) -> str:
        """``file``, ``hdfs``, ``s3a``, ... of a location (local paths are ``file``)."""
        written = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
        return (written.group(1) if written else self.qualify(uri).split(":", 1)[0]).lower()

    def exclusive_create(self, uri: str) -> Optional[str]:
        """How ``publish_text`` keeps two writers from both creating ``uri`` (e.g. ``hard link``), or None when
        this file system offers no exclusive create (object stores: see the module docstring)."""
        return EXCLUSIVE_CREATE.get(self.scheme(uri))

    def publish_text(self, uri: str, text: str) -> None:
        """Creates ``uri`` holding ``text``: the file appears whole, and only if it is absent.

        Exclusive (two concurrent callers: exactly one succeeds) where ``exclusive_create(uri)`` says so; elsewhere
        the existence check and the create are separate requests.

        Raises:
            TargetExistsError: ``uri`` exists.
            StorageError: the file cannot be written.
        """
        kind = self.exclusive_create(uri)
        if kind == "hard link":
            create_local_file_exclusively(local_path(self.qualify(uri)), text)
        elif kind == "atomic rename":
            self._publish_by_atomic_rename(uri, text)
        else:
            self._create_if_absent(uri, text)

    def _publish_by_atomic_rename(self, uri: str, text: str) -> None:
        """Temporary file, then ``FileContext.rename`` with ``Rename.NONE``: fails if the target exists (one
        NameNode operation on HDFS)."""
        from py4j.protocol import Py4JJavaError

        fs, path = self._resolve(uri)
        temporary = self._jvm.org.apache.hadoop.fs.Path(path.getParent(), f"{_TEMPORARY_PREFIX}{uuid.uuid4().hex}")
        self.write_text(temporary.toString(), text)
        rename = getattr(self._jvm.org.apache.hadoop.fs, "Options$Rename")
        options = self._gateway.new_array(rename, 1)
        options[0] = rename.NONE
        try:
            self._jvm.org.apache.hadoop.fs.FileContext.getFileContext(path.toUri(), self._hadoop_conf).rename(
                temporary, path, options)
        except Py4JJavaError as error:
            if error.java_exception.getClass().getName().endswith("FileAlreadyExistsException"):
                raise TargetExistsError(f"{uri} exists: another writer created it first") from None
            raise StorageError(f"cannot create {uri}: {error.java_exception.toString()}") from None
        finally:
            if fs.exists(temporary):
                fs.delete(temporary, False)

    def _create_if_absent(self, uri: str, text: str) -> None:
        from py4j.protocol import Py4JJavaError

        if self.exists(uri):
            raise TargetExistsError(f"{uri} exists: another writer created it first")
        try:
            self.write_text(uri, text)
        except Py4JJavaError as error:
            if error.java_exception.getClass().getName().endswith("FileAlreadyExistsException"):
                raise TargetExistsError(f"{uri} exists: another writer created it first") from None
            raise StorageError(f"cannot create {uri}: {error.java_exception.toString()}") from None

    def read_json(self, uri: str) -> Optional[dict]:
        """A small JSON file's content, or None when it is absent or not (yet) complete JSON."""
        if not self.exists(uri):
            return None
        try:
            return json.loads(self.read_text(uri))
        except ValueError:
            return None

    def file_size(self, uri: str) -> Optional[int]:
        fs, path = self._resolve(uri)
        return int(fs.getFileStatus(path).getLen()) if fs.exists(path) else None

    def size(self, uri: str) -> int:
        """Bytes under a file or folder (0 when absent)."""
        fs, path = self._resolve(uri)
        return int(fs.getContentSummary(path).getLength()) if fs.exists(path) else 0

    def modified_at(self, uri: str) -> Optional[float]:
        """Modification time in seconds since the epoch, or None when absent."""
        fs, path = self._resolve(uri)
        return fs.getFileStatus(path).getModificationTime() / 1000.0 if fs.exists(path) else None
