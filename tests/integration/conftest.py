"""The one `visionlake demo` run of the suite, shared by test_console.py (what its console holds) and test_operate.py
(what it leaves: the summary, the report in a browser, the MLflow server over its store, the notebooks)."""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TINY_TRAINING, loopback_job_env

# The demo on a short schedule: 200 images, one epoch per model.
DEMO_SETTINGS = [*TINY_TRAINING, "demo.images_per_class=40", "train.epochs=1", "demo.anomaly_epochs=1",
                 "demo.gan_epochs=1", "demo.quality_samples=100"]
# Both modules read this one run: pytest-xdist keeps them on one worker (tests/conftest.py).
CLI_DEMO_GROUP = pytest.mark.xdist_group("cli-demo")


@dataclass(frozen=True)
class DemoRun:
    """What `visionlake demo` printed and left in its working directory (its workspace)."""
    root: Path
    config: object
    returncode: int
    console: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.console)

    @property
    def step_names(self) -> list[str]:
        """The steps the summary's first line times: ``finished in 50s (demo data 1s, ingest 5s, ...)``."""
        steps = re.search(r"visionlake demo finished in \d+s \((.*)\)$", self.text, re.M).group(1)
        return [re.sub(r" \d+s$", "", step) for step in steps.split(", ")]

    @property
    def anomaly_rate(self) -> float:
        return float(re.search(r"^anomaly rate ([\d.]+)%", self.text, re.M).group(1)) / 100


@pytest.fixture(scope="session")
def cli_demo(tmp_path_factory) -> DemoRun:
    """`visionlake demo` as a person runs it: the CLI in a fresh working directory, on a short schedule."""
    from visionlake.config import load_config

    root = tmp_path_factory.mktemp("cli-demo")
    result = subprocess.run([sys.executable, "-m", "visionlake.operate.cli", "demo", *DEMO_SETTINGS], cwd=root,
                            env=loopback_job_env(), capture_output=True, text=True, timeout=1200)
    console = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, "\n".join(console[-60:])
    return DemoRun(root, load_config(None, DEMO_SETTINGS, base_dir=str(root)), result.returncode, console)
