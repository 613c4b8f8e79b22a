"""What every benchmark shares: where the shared MNIST archive is, and a temporary workspace."""
from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "mnist_png.tar.gz"


def archive_available() -> bool:
    """True when the shared archive is there; otherwise says why the benchmark is skipped."""
    if not ARCHIVE.exists():
        print(f"skipped: {ARCHIVE} not found (the shared datasets folder must sit beside the project)")
    return ARCHIVE.exists()


@contextlib.contextmanager
def workspace(prefix: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sample_archive(limit: int | None, target: Path, keep=None) -> Path:
    """The shared archive itself, or a spread-out sample of ``limit`` of its members that ``keep`` accepts."""
    if not limit and keep is None:
        return ARCHIVE
    with tarfile.open(ARCHIVE) as source, tarfile.open(target, "w:gz") as sample:
        members = [m for m in source.getmembers() if m.isfile() and (keep is None or keep(m.name))]
        limit = limit or len(members)
        # A ceiling step spreads the sample over the whole archive (training and testing folders alike).
        for member in members[:: max(1, -(-len(members) // limit))][:limit]:
            sample.addfile(member, source.extractfile(member))
    return target


def mnist_config(work: Path, source: Path, *overrides: str):
    """conf/mnist.yaml with the lake, MLflow store and checkpoints inside the benchmark's temp workspace."""
    from visionlake.config import load_config

    return load_config(str(ROOT / "conf" / "mnist.yaml"), [
        f"ingest.source.uri={source}", f"lake.root={work / 'lake'}", "spark.conf.spark.ui.enabled=false",
        f"tracking.tracking_uri=sqlite:///{work}/mlflow.db", f"tracking.artifact_root={work}/artifacts",
        f"train.checkpoint_root={work}/checkpoints", "train.dataset=mnist", "train.num_proc=2", *overrides],
        base_dir=str(work))


def decode_in_one_process(files: list[Path], plan, batch: int):
    """The ingest's per-image work in this process, on files read in batches: read, hash, decode, normalise, encode.
    Returns the decoded frame (accepted and rejected rows), as the job's decode stage would."""
    import pandas as pd

    from visionlake.ingest.decode import decode_records

    frames = []
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        raw = pd.DataFrame({"source_path": [f"file:{p}" for p in chunk], "content": [p.read_bytes() for p in chunk],
                            "length": [0] * len(chunk), "label_hint": [None] * len(chunk),
                            "split_hint": [None] * len(chunk), "error": [None] * len(chunk)})
        frames.append(decode_records(raw, plan))
    return pd.concat(frames, ignore_index=True)


class PeakMemory:
    """Peak resident memory of this process and all its descendants (the Spark JVM and its Python workers),
    sampled every ``interval`` seconds from /proc while the block runs."""

    def __init__(self, interval: float = 0.1):
        import threading

        self.interval, self.peak_bytes = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> int:
        return round(self.peak_bytes / 2 ** 20)

    def _sample(self) -> None:
        import os

        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, sum(_rss(pid) for pid in _tree(os.getpid())))
            self._stop.wait(self.interval)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    pids, pending = [], [root]
    while pending:
        pid = pending.pop()
        pids.append(pid)
        pending.extend(children.get(pid, []))
    return pids


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
