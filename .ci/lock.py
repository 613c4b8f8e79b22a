"""Regenerates constraints.txt, the full lock of the job environment (`make lock`), or with ``--current``
constraints-current.txt, the current stack's lock from .venv-current (`make lock-current`).

Every package of the tested environment (.venv, as `make setup` and the extras' targets install it, Horovod
included) is pinned at its installed version; packages of extras not installed there, and those only the `gpu` extra
pulls (tensorflow and its CUDA wheels), at the versions pip resolves for them against those pins. One file thus
constrains CPU and GPU installs alike: `pip install -c constraints.txt 'visionlake[cpu]'` or `'visionlake[gpu]'`.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = """\
# The full lock of visionlake's job environment: every package, transitive ones included (regenerate with
# `make lock`, from the tested .venv; see .ci/lock.py). The known-good stack (README "Stack", ../shared/STACK.md):
# Horovod 0.28.1 cannot build against TF >= 2.16, petastorm 0.13.1 breaks on pyarrow >= 15 and numpy >= 2 and needs
# setuptools < 70. tensorflow-cpu serves the `cpu` extra; tensorflow and the nvidia-* wheels the `gpu` extra.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(python: str) -> dict[str, tuple[str, str]]:
    frozen = subprocess.run([python, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"], check=True,
                            capture_output=True, text=True).stdout
    pins = {}
    for line in frozen.splitlines():
        if line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        if sep and canonical(name) != "visionlake":
            pins[canonical(name)] = (name, version)
    return pins


def resolved(python: str, requirement: str, constraints: Path) -> dict[str, tuple[str, str]]:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-build-isolation",
                        "--quiet", "--disable-pip-version-check", "--report", str(report), "-c", str(constraints),
                        requirement], check=True, cwd=REPO, stderr=subprocess.DEVNULL)
        items = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): (i["metadata"]["name"], i["metadata"]["version"]) for i in items
            if canonical(i["metadata"]["name"]) != "visionlake"}


CURRENT_HEADER = """\
# The full lock of visionlake's current stack (`make setup-current`, Python 3.12): TensorFlow with Keras 3, numpy 2,
# current pyarrow, no Horovod or petastorm (train.engine=tf_distribute, train.reader=arrow). Regenerate with
# `make lock-current` from the tested .venv-current (.ci/lock.py --current).
"""


def main() -> int:
    if "--current" in sys.argv[1:]:
        return lock_current()
    python = str(REPO / ".venv" / "bin" / "python")
    pins = installed(python)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as frozen:
        frozen.write("".join(f"{name}=={version}\n" for name, version in pins.values()))
        frozen.flush()
        # Extras not installed in .venv (e.g. notebooks until `make notebooks`) and the gpu extra's own packages.
        for requirement in (".[cpu,test,notebooks,bench,cluster]", ".[gpu]"):
            for key, pin in resolved(python, requirement, Path(frozen.name)).items():
                pins.setdefault(key, pin)
    lines = [f"{name}=={version}\n" for _, (name, version) in sorted(pins.items())]
    (REPO / "constraints.txt").write_text(HEADER + "".join(lines))
    print(f"constraints.txt: {len(lines)} pinned packages")
    return 0


def lock_current() -> int:
    python = str(REPO / ".venv-current" / "bin" / "python")
    pins = installed(python)
    lines = [f"{name}=={version}\n" for _, (name, version) in sorted(pins.items())]
    (REPO / "constraints-current.txt").write_text(CURRENT_HEADER + "".join(lines))
    print(f"constraints-current.txt: {len(lines)} pinned packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
