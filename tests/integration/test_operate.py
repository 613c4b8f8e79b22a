"""Operating visionlake: the full demo pipeline and its summary, the real MLflow server's REST API over the demo's
store, and the notebooks executed top to bottom on the demo lake."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import MLFLOW_SERVER_ENV, REPO, loopback_job_env
from tests.integration.conftest import CLI_DEMO_GROUP

pytestmark = CLI_DEMO_GROUP

DEMO_MODELS = ("visionlake-classifier", "visionlake-anomaly", "visionlake-cdcgan")
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo(cli_demo):
    """The suite's one `visionlake demo` run (tests/integration/conftest.py): its workspace, config and console."""
    return cli_demo.root, cli_demo.config, cli_demo


def test_demo_runs_every_step_and_ends_with_a_summary(demo, spark):
    from mlflow.tracking import MlflowClient

    from visionlake.operate.pipeline import registered_aliases, table_counts

    root, config, run = demo
    images = 5 * config.demo.images_per_class
    assert table_counts(spark, config) == {"images": images, "quarantine": 4, "predictions": images, "synthetic": 0}
    assert run.step_names == ["demo data", "ingest", "classifier", "anomaly model", "conditional GAN", "scoring"]
    models = registered_aliases(config)
    for name in DEMO_MODELS:
        assert models[name] == {"candidate": "1", "champion": "1"}
    assert 0.0 < run.anomaly_rate < 1.0
    detector = MlflowClient(config.tracking.tracking_uri).get_model_version("visionlake-anomaly", "1")
    assert detector.tags["anomaly.normal_labels"] == "0,1,3,4", "the demo treats rings (label 2) as anomalies"
    for expected in ("predictions", "@champion = v1", "anomaly rate", "make mlflow-ui", "notebooks"):
        assert expected in run.text


# Chromium reads the report from disk and reaches nothing: every host resolves to nothing, every request that still
# tries goes to a closed loopback port, and the background services that phone home are off.
CHROMIUM_OFFLINE = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND",
                    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=10000"]


def rendered_dom(page: Path, profile: Path) -> str:
    """The page's DOM after it loaded (scripts run) in a real headless Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Chromium, which `make browser` installs as root from the system packages "
                    "(sudo apt-get install chromium)")
    result = subprocess.run([chromium, *CHROMIUM_OFFLINE, f"--user-data-dir={profile}", "--dump-dom",
                             page.as_uri()], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_demo_report_shows_every_picture_in_a_real_browser(demo, tmp_path):
    root, config, run = demo
    report = root / "demo-report.html"
    assert report.is_file() and f"report: {report}" in run.text

    dom = rendered_dom(report, tmp_path / "chromium-profile")
    loaded, total = map(int, re.search(r'data-images-loaded="(\d+)/(\d+)"', dom).groups())
    classes = ["circle", "cross", "ring", "square", "triangle"]
    # One strip per class, the confusion matrix, the histogram, and each top anomaly with its difference map.
    assert loaded == total >= len(classes) + 2 + 2, f"{loaded} of {total} images loaded"
    assert re.findall(r'alt="(circle|cross|ring|square|triangle)"', dom) == classes
    for alt in ("confusion matrix", "anomaly score histogram", "image ", "difference map "):
        assert f'alt="{alt}' in dom, alt
    for figure in ("classifier test accuracy", "anomaly detector val AUROC", "conditional GAN conditional accuracy",
                   "conditional GAN FCD"):
        assert figure in dom and figure in run.text


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(base: str, endpoint: str, **query: str) -> dict:
    with urllib.request.urlopen(f"{base}{endpoint}?{urllib.parse.urlencode(query)}", timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def mlflow_server(demo):
    """The real MLflow server (what `make mlflow-ui` runs) over the demo's store, on a free loopback port."""
    root, config, _ = demo
    port = free_loopback_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", config.tracking.tracking_uri,
         "--default-artifact-root", str(root / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=loopback_job_env(**MLFLOW_SERVER_ENV), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"MLflow server did not start: {server.stderr.read()[-3000:]}") from None
                time.sleep(1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_mlflow_server_shows_the_demo_models_aliases_and_artifacts(mlflow_server):
    found = get_json(mlflow_server, "/api/2.0/mlflow/registered-models/search")["registered_models"]
    assert sorted(model["name"] for model in found) == sorted(DEMO_MODELS)
    for name in DEMO_MODELS:
        version = get_json(mlflow_server, "/api/2.0/mlflow/registered-models/alias", name=name,
                           alias="champion")["model_version"]
        assert version["version"] == "1"
    gan_run = get_json(mlflow_server, "/api/2.0/mlflow/registered-models/alias", name="visionlake-cdcgan",
                       alias="champion")["model_version"]["run_id"]
    grids = get_json(mlflow_server, "/api/2.0/mlflow/artifacts/list", run_id=gan_run, path="samples")["files"]
    assert grids and all(item["path"].endswith(".png") for item in grids), "sample grids browsable in the UI"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_on_the_demo_lake(notebook: Path, demo, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    root, _, _ = demo
    monkeypatch.setenv("VISIONLAKE_WORKSPACE", str(root))  # the kernel inherits it
    executed = nbformat.read(notebook, as_version=4)
    NotebookClient(executed, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()  # raises on a failing cell

    outputs = [output for cell in executed.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for output in outputs), "each notebook shows pictures"
