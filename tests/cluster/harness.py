"""A multi-node Spark cluster on this machine, for testing what a real cluster breaks.

A Spark standalone master and two 1-core workers from the pyspark distribution, plus an MLflow tracking server with
artifact serving, all bound to 127.0.0.1. Each worker runs in its own mount namespace (``unshare -m``) with a private
tmpfs over ``/tmp`` and over the driver's workspace (this checkout, its venv and its MLflow store), so its executors
share only what cluster nodes share: the network, and the shared folder that stands for NFS/HDFS (the lake root and
the raw data). Spark is "installed" on each node by a read-only bind mount of the pyspark distribution into the
shared folder's ``node-spark`` mount point, visible only inside the namespaces. Executors get their Python from the
packed environment that ``spark-submit --archives`` ships, or from that environment installed on the nodes once
(``install_job_env``), as a node image would carry it.

    python -m tests.cluster.harness up | down | status          (make cluster-up / cluster-down)

Every process is started here, recorded with its id in ``build/cluster/state.json``, and stopped by that id (its
whole process group: the worker's executors with it). Nothing listens beyond loopback.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from tests.conftest import MLFLOW_SERVER_ENV

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = REPO / "build" / "cluster"
STATE_FILE = STATE_DIR / "state.json"
LOOPBACK = "127.0.0.1"
WORKERS = 2
WORKER_MEMORY = "6g"


def shared_root() -> Path:
    """The "network file system": outside /tmp and outside the workspace, the two places workers cannot see."""
    checkout = hashlib.sha1(str(REPO).encode()).hexdigest()[:8]  # one cluster per checkout
    return Path("/var/tmp") / f"visionlake-cluster-{os.getuid()}-{checkout}"


@dataclass
class Cluster:
    master_url: str
    master_ui: str
    tracking_uri: str
    shared: str                          # the shared folder: lake, raw data
    spark_conf_dir: str = ""             # SPARK_CONF_DIR for clients: spark-defaults.conf for this cluster
    pids: dict[str, int] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)  # each pid's start time (clock ticks after boot)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def lake_root(self) -> str:
        return f"{self.shared}/lake"

    def alive_workers(self) -> int:
        with urllib.request.urlopen(f"{self.master_ui}/json/", timeout=5) as response:
            state = json.load(response)
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _base_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYSPARK", "SPARK"))}
    env.update(SPARK_LOCAL_IP=LOOPBACK, SPARK_NO_DAEMONIZE="1")
    return env


def missing_prerequisites() -> Optional[str]:
    """Why the harness cannot start on this machine, or None when it can."""
    missing = [tool for tool in ("unshare", "mount", "java") if shutil.which(tool) is None]
    if missing:
        return f"the cluster harness needs {', '.join(missing)} (util-linux, Java 17) on PATH"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("the cluster harness needs mount namespaces (`unshare -m`: root, or a kernel allowing user "
                f"namespaces with `unshare -rm`): {probe.stderr.strip()}")
    return None


def check_prerequisites() -> None:
    reason = missing_prerequisites()
    if reason:
        sys.exit(reason)


def _start(name: str, command: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    log_file = logs / f"{name}.log"
    with open(log_file, "ab") as out:
        # Its own session and process group: `down` stops the process and everything it started by this id.
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(logs))


def install_job_env(archive: Path) -> str:
    """The job environment installed on every node, as a node image would carry it: the packed environment
    ``archive`` unpacked once into the shared folder (again only when the archive changes). Returns the executors'
    interpreter. An application that uses it ships and unpacks nothing, where ``--archives`` costs one unpack on the
    driver and one on each executor per application."""
    target = shared_root() / "node-env"
    stat = archive.stat()
    identity = f"{archive.resolve()} {stat.st_size} {stat.st_mtime_ns}"
    stamp = target / ".unpacked-from"
    if not (stamp.exists() and stamp.read_text() == identity):
        partial = target.with_name("node-env.partial")
        for folder in (target, partial):
            shutil.rmtree(folder, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run(["tar", "xzf", str(archive), "-C", str(partial)], check=True)
        (partial / stamp.name).write_text(identity)
        partial.rename(target)
    return str(target / "bin" / "python")


def _worker_command(index: int, master_url: str, node_spark: Path) -> list[str]:
    port, ui_port = _free_port(), _free_port()
    # Inside the namespace: Spark "installed" read-only at node_spark, then private tmpfs over the workspace and /tmp
    # (in that order, so a workspace under /tmp is hidden too); the worker's scratch and executors live in that /tmp.
    script = f"""set -e
mount --bind {_spark_home()} {node_spark}
mount -o remount,bind,ro {node_spark}
mount -t tmpfs -o size=16g,mode=1777 node{index}-workspace {REPO}
mount -t tmpfs -o size=16g,mode=1777 node{index}-tmp /tmp
mkdir -p /tmp/spark-worker /tmp/spark-local
export SPARK_HOME={node_spark} SPARK_WORKER_DIR=/tmp/spark-worker SPARK_LOCAL_DIRS=/tmp/spark-local
# Finished applications' folders (each holds an unpacked job environment, ~2.3 GB of this node's tmpfs, i.e. RAM)
# are removed within seconds instead of after Spark's default 7 days.
export SPARK_WORKER_OPTS="-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.interval=5 \
  -Dspark.worker.cleanup.appDataTtl=1"
cd /tmp
exec {node_spark}/bin/spark-class org.apache.spark.deploy.worker.Worker --host {LOOPBACK} --port {port} \
  --webui-port {ui_port} --cores 1 --memory {WORKER_MEMORY} --work-dir /tmp/spark-worker {master_url}
"""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script]


def up(timeout: float = 120, client_conf: Optional[dict[str, str]] = None) -> Cluster:
    """Starts master, workers and the tracking server; returns when both workers are registered and MLflow answers.
    ``client_conf``: more spark-defaults for the submits (the test suite's JVM options)."""
    check_prerequisites()
    if STATE_FILE.exists():
        cluster = load()
        if cluster is not None and is_running(cluster):
            return cluster
        down()
    shared = shared_root()
    node_spark = shared / "node-spark"
    for folder in (shared / "lake", shared / "raw", shared / "mlflow", node_spark, STATE_DIR / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    logs = STATE_DIR / "logs"
    master_port, master_ui_port, mlflow_port = _free_port(), _free_port(), _free_port()
    cluster = Cluster(master_url=f"spark://{LOOPBACK}:{master_port}", master_ui=f"http://{LOOPBACK}:{master_ui_port}",
                      tracking_uri=f"http://{LOOPBACK}:{mlflow_port}", shared=str(shared))
    env = _base_env()
    processes = {"master": _start("master", [
        str(_spark_home() / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master", "--host", LOOPBACK,
        "--port", str(master_port), "--webui-port", str(master_ui_port)], {**env, "SPARK_HOME": str(_spark_home())},
        logs)}
    for index in range(1, WORKERS + 1):
        processes[f"worker-{index}"] = _start(f"worker-{index}", _worker_command(index, cluster.master_url,
                                                                                node_spark), env, logs)
    # The tracking server: the store and the artifacts live with it (on this "node"), and clients upload and
    # download artifacts through it (--serve-artifacts), so no worker needs the folder.
    mlflow = Path(sys.executable).parent / "mlflow"
    processes["mlflow"] = _start("mlflow", [
        str(mlflow), "server", "--host", LOOPBACK, "--port", str(mlflow_port), "--workers", "2",
        "--backend-store-uri", f"sqlite:///{shared / 'mlflow' / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(shared / "mlflow" / "artifacts")],
        {**env, **MLFLOW_SERVER_ENV}, logs)
    cluster.spark_conf_dir = str(_write_client_conf(cluster, client_conf or {}))
    cluster.pids = {name: process.pid for name, process in processes.items()}
    cluster.started = {name: _start_time(process.pid) for name, process in processes.items()}
    cluster.logs = {name: str(logs / f"{name}.log") for name in processes}
    STATE_FILE.write_text(json.dumps(asdict(cluster), indent=2))
    try:
        _wait_until_ready(cluster, processes, timeout)
    except Exception:
        down()
        raise
    return cluster


def _write_client_conf(cluster: Cluster, extra: dict[str, str]) -> Path:
    """spark-defaults.conf for submits to this cluster (export SPARK_CONF_DIR=<it>)."""
    folder = STATE_DIR / "conf"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "spark.master": cluster.master_url,
        "spark.driver.host": LOOPBACK, "spark.driver.bindAddress": LOOPBACK,
        # All nodes have the address 127.0.0.1 here, so Spark would take the other worker's shuffle files as
        # "host-local" and read them from its own disk; real nodes have distinct addresses, and neither shares a disk.
        "spark.shuffle.readHostLocalDisk": "false",
        **extra,
    }
    (folder / "spark-defaults.conf").write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
    return folder


def _wait_until_ready(cluster: Cluster, processes: dict[str, subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {cluster.logs[name]}:\n"
                                   + Path(cluster.logs[name]).read_text()[-3000:])
        try:
            workers = cluster.alive_workers()
            with urllib.request.urlopen(f"{cluster.tracking_uri}/health", timeout=5) as response:
                mlflow_ok = response.status == 200
        except OSError:
            workers, mlflow_ok = 0, False
        if workers == WORKERS and mlflow_ok:
            return
        time.sleep(1)
    raise TimeoutError(f"the cluster was not ready within {timeout:.0f} s; logs in {STATE_DIR / 'logs'}")


def load() -> Optional[Cluster]:
    if not STATE_FILE.exists():
        return None
    return Cluster(**json.loads(STATE_FILE.read_text()))


def _start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: with the id, it names one process (ids get reused after exit)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[19])


def _is_ours(pid: int, started: int) -> bool:
    """The id still belongs to the live process this harness started."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child, exited: reaped now
            return False
    except ChildProcessError:
        pass  # started by another harness process (`make cluster-up`), which init reaps
    return _start_time(pid) == started and os.getpgid(pid) == pid


def is_running(cluster: Cluster) -> bool:
    return all(_is_ours(pid, cluster.started.get(name, -1)) for name, pid in cluster.pids.items())


def down(timeout: float = 30) -> None:
    """Stops every process the harness started (by its recorded id, with its process group) and clears the state."""
    cluster = load()
    if cluster is not None:
        ours = {pid: cluster.started.get(name, -1) for name, pid in cluster.pids.items()
                if _is_ours(pid, cluster.started.get(name, -1))}
        for pid in ours:
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_is_ours(pid, start) for pid, start in ours.items()):
            time.sleep(0.5)
        for pid, start in ours.items():
            if _is_ours(pid, start):
                os.killpg(pid, signal.SIGKILL)
        STATE_FILE.unlink()
        shutil.rmtree(cluster.shared, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    if args.action == "up":
        cluster = up()
        print(f"Spark master {cluster.master_url} (UI {cluster.master_ui}), {WORKERS} workers, MLflow "
              f"{cluster.tracking_uri}; shared folder {cluster.shared} (lake: {cluster.lake_root}).\n"
              f"Submit with `export SPARK_CONF_DIR={cluster.spark_conf_dir}` (sets the master). "
              "Stop with `make cluster-down`.")
    elif args.action == "down":
        down()
        print("cluster stopped")
    else:
        cluster = load()
        if cluster is None or not is_running(cluster):
            print("no cluster running")
            return 1
        print(json.dumps({**asdict(cluster), "alive_workers": cluster.alive_workers()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
