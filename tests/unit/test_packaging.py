"""Packaging: TensorFlow is chosen at install time (cpu or gpu extra), and the lock pins everything either installs."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

LOCK = REPO / "constraints.txt"
CURRENT_LOCK = REPO / "constraints-current.txt"
CURRENT = sys.version_info >= (3, 12)  # the current stack's interpreter; the pinned lock is for Python 3.11


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock=LOCK) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[canonical(name)] = version.strip()
    return pins


def start_resolving(extra: str, folder, lock=LOCK) -> tuple[subprocess.Popen, object]:
    """pip resolving visionlake[extra] with the lock against the registry (nothing installed), started."""
    report = folder / f"{extra}.json"
    process = subprocess.Popen([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                                "--no-build-isolation", "--quiet", "--disable-pip-version-check", "--report",
                                str(report), "-c", str(lock), f".[{extra}]"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    return process, report


def resolved(started: tuple[subprocess.Popen, object]) -> dict[str, str]:
    """What pip would install for a resolution ``start_resolving`` started: {package: version}."""
    process, report = started
    _, stderr = process.communicate(timeout=600)
    if process.returncode != 0 and re.search(r"Connection|NewConnectionError|Temporary failure|timed out", stderr):
        pytest.skip(f"the package registry is unreachable: {stderr.strip().splitlines()[-1]}")
    assert process.returncode == 0, stderr[-3000:]
    items = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in items
            if canonical(i["metadata"]["name"]) != "visionlake"}


PINNED_ONLY = pytest.mark.skipif(CURRENT, reason="constraints.txt locks the pinned stack (Python 3.11)")
CURRENT_ONLY = pytest.mark.skipif(not CURRENT, reason="constraints-current.txt locks the current stack (Python 3.12)")
# This interpreter's extras and their lock: (extra, lock).
EXTRAS = [("current,test", CURRENT_LOCK)] if CURRENT else [("gpu", LOCK), ("cpu", LOCK)]


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory):
    """Every extra of this stack resolving at once: each waits mostly on the registry (about half its time here)."""
    folder = tmp_path_factory.mktemp("resolutions")
    started = {extra: start_resolving(extra, folder, lock) for extra, lock in EXTRAS}
    yield started
    for process, _ in started.values():  # one a deselected test never waited for
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("extra, tensorflow, cuda, lock", [
    pytest.param("gpu", "tensorflow", True, LOCK, marks=PINNED_ONLY),
    pytest.param("cpu", "tensorflow-cpu", False, LOCK, marks=PINNED_ONLY),
    pytest.param("current,test", "tensorflow-cpu", False, CURRENT_LOCK, marks=CURRENT_ONLY)])
def test_each_tensorflow_extra_resolves_entirely_from_the_lock(extra, tensorflow, cuda, lock, resolutions):
    pins = lock_pins(lock)
    resolved_now = resolved(resolutions[extra])

    assert resolved_now[tensorflow] == pins[tensorflow]
    other = "tensorflow-cpu" if tensorflow == "tensorflow" else "tensorflow"
    assert other not in resolved_now, f"the {extra} extra must not pull {other}"
    assert any(name.startswith("nvidia-") for name in resolved_now) == cuda
    unpinned = {name: version for name, version in resolved_now.items() if pins.get(name) != version}
    assert not unpinned, f"resolved but not pinned at that version in {lock.name}: {unpinned}"
    if lock == CURRENT_LOCK:
        assert "horovod" not in resolved_now and "petastorm" not in resolved_now


def test_the_wheel_requires_tensorflow_only_through_an_extra(visionlake_wheel):
    with zipfile.ZipFile(visionlake_wheel) as wheel:
        metadata = next(wheel.read(n).decode() for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    tensorflow = [r for r in requires if r.startswith("tensorflow")]
    assert tensorflow and all("extra ==" in r for r in tensorflow), tensorflow
    assert {r.split("extra ==")[1].strip().strip("'\"") for r in tensorflow} == {"cpu", "gpu", "current"}
    assert "Provides-Extra: gpu" in metadata and "Provides-Extra: cpu" in metadata


def test_the_wheel_holds_exactly_the_package_in_the_tree(visionlake_wheel):
    """No module an earlier build left in build/ (the flat modules before the subpackages) rides along."""
    package = REPO / "lib" / "visionlake"
    in_tree = {str(p.relative_to(package.parent)) for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    with zipfile.ZipFile(visionlake_wheel) as wheel:
        in_wheel = {name for name in wheel.namelist() if name.startswith("visionlake/") and name.endswith(".py")}
    assert in_wheel == in_tree
