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
