"""What every benchmark shares: where the shared MNIST archive is, and a temporary workspace."""
from __future__ import annotations

import contextlib
import shutil
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
