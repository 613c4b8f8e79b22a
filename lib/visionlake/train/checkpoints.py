"""A training run's checkpoints on the lake's file system, so a resume works from whichever node rank 0 lands on.

Rank 0 writes TensorFlow checkpoints to a local scratch folder and uploads them under ``train.checkpoint_root/<run>``
(any URI pyarrow reaches: a shared local mount, ``hdfs://``, ``s3a://``); the driver never opens those files. Best
weights travel to the driver as arrays in the rank's result (through Spark), and are also kept here so a resumed run
still knows the best epoch it had before the restart.

Layout of one run::

    <root>/<run>/epoch-000003/ckpt.index, ckpt.data-*   the last ``KEEP`` checkpoints
    <root>/<run>/latest                                 the name of the newest complete one
    <root>/<run>/best.pkl                               the best weights so far ({network: [arrays]})
"""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from visionlake.lake.filesystem import pyarrow_filesystem

# {network name: its get_weights() arrays}: what ranks hand the driver instead of a path on their own disk.
NetworkWeights = dict[str, list[np.ndarray]]

KEEP = 2
_PREFIX = "ckpt"


def snapshot_weights(networks: dict[str, Any]) -> NetworkWeights:
    return {name: [np.array(w) for w in network.get_weights()] for name, network in networks.items()}


def load_weights(networks: dict[str, Any], weights: NetworkWeights) -> None:
    for name, network in networks.items():
        network.set_weights(weights[name])


class CheckpointStore:
    """One run's checkpoints under ``uri``; used by rank 0 only."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self._fs, self._path = pyarrow_filesystem(self.uri)

    def _read(self, name: str) -> Optional[bytes]:
        from pyarrow import fs as pafs

        path = f"{self._path}/{name}"
        if self._fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self._fs.open_input_stream(path) as stream:
            return stream.read()

    def _publish(self, name: str, data: bytes) -> None:
        """Writes ``name`` whole or not at all (temp file + move), so a crash mid-write leaves the old one."""
        temporary = f"{self._path}/.{name}.tmp"
        with self._fs.open_output_stream(temporary) as out:
            out.write(data)
        self._fs.move(temporary, f"{self._path}/{name}")

    def save(self, checkpoint, epoch: int) -> None:
        """Uploads ``checkpoint`` as epoch ``epoch``, points ``latest`` at it, and drops all but the last ``KEEP``."""
        folder = f"epoch-{epoch:06d}"
        self._fs.create_dir(f"{self._path}/{folder}", recursive=True)
        with tempfile.TemporaryDirectory(prefix="visionlake-ckpt-") as scratch:
            checkpoint.write(f"{scratch}/{_PREFIX}")
            for local in sorted(Path(scratch).iterdir()):
                with self._fs.open_output_stream(f"{self._path}/{folder}/{local.name}") as out:
                    out.write(local.read_bytes())
        self._publish("latest", folder.encode())
        for old in self._epoch_folders()[:-KEEP]:
            self._fs.delete_dir(f"{self._path}/{old}")

    def restore(self, checkpoint) -> bool:
        """Restores the newest complete checkpoint into ``checkpoint``; False when the run has none."""
        from pyarrow import fs as pafs

        latest = self._read("latest")
        if latest is None:
            return False
        folder = f"{self._path}/{latest.decode()}"
        with tempfile.TemporaryDirectory(prefix="visionlake-ckpt-") as scratch:
            for info in self._fs.get_file_info(pafs.FileSelector(folder)):
                with self._fs.open_input_stream(info.path) as stream:
                    Path(scratch, info.base_name).write_bytes(stream.read())
            checkpoint.read(f"{scratch}/{_PREFIX}").expect_partial()
        return True

    def save_best(self, weights: NetworkWeights) -> None:
        self._fs.create_dir(self._path, recursive=True)
        self._publish("best.pkl", pickle.dumps(weights, protocol=pickle.HIGHEST_PROTOCOL))

    def load_best(self) -> Optional[NetworkWeights]:
        data = self._read("best.pkl")
        return pickle.loads(data) if data is not None else None  # noqa: S301 - written by this run's rank 0

    def _epoch_folders(self) -> list[str]:
        from pyarrow import fs as pafs

        infos = self._fs.get_file_info(pafs.FileSelector(self._path, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and
                      i.base_name.startswith("epoch-"))
