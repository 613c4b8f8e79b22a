"""What shipping the packed environment costs per application on the two-node cluster: the slim archive `make
cluster-env` builds vs the whole venv packed as it was before (nothing excluded), in one run.

    python bench/ship_bench.py              # 3 applications per archive (make bench-ship)
    python bench/ship_bench.py --limit 5

Each application is the smallest one that needs the environment: `spark-submit --archives <archive>#environment`
with `spark.pyspark.python=./environment/bin/python`, one Python task on each of the two executors (each executor
and the client-mode driver unpack the archive). The two archives take turns, so drift on the machine hits both.
Prints each archive's bytes, unpacked bytes and seconds per application, and the ratio slim / whole. Needs `make
cluster-env` (its venv in build/cluster-env packs the whole archive, cached in bench-results/) and root (mount
namespaces). The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster import harness  # noqa: E402 - the repository root must be importable first
from tests.cluster.pipeline import PACKED_ENV, SPARK_SUBMIT, Target, job_env  # noqa: E402

CLUSTER_VENV = REPO / "build" / "cluster-env"
WHOLE_ENV = REPO / "bench-results" / "visionlake-env-whole.tar.gz"

# Runs on the cluster: one task per executor reports the interpreter it ran on.
APP = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("ship-bench").getOrCreate()
found = spark.sparkContext.parallelize(range(2), 2).map(lambda _: sys.executable).collect()
assert all(path.endswith("environment/bin/python") for path in found), found
spark.stop()
"""


def whole_archive() -> Path:
    """The job environment packed with nothing left out, as dist/visionlake-env.tar.gz was before #31."""
    if not WHOLE_ENV.exists():
        if not CLUSTER_VENV.exists():
            raise SystemExit(f"needs {CLUSTER_VENV}: run `make cluster-env` first")
        WHOLE_ENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).parent / "venv-pack"), "--quiet", "--force", "-p", str(CLUSTER_VENV),
                        "-o", str(WHOLE_ENV)], check=True)
    return WHOLE_ENV


def unpacked_bytes(archive: Path) -> int:
    with tarfile.open(archive) as tar:
        return sum(member.size for member in tar)


def submit(target: Target, archive: Path, app: Path) -> float:
    command = [str(SPARK_SUBMIT), "--master", target.master, "--conf", "spark.ui.enabled=false",
               "--total-executor-cores", "2", "--executor-cores", "1", "--executor-memory", "1g",
               "--conf", f"spark.pyspark.driver.python={sys.executable}",
               "--archives", f"{archive}#environment", "--conf", "spark.pyspark.python=./environment/bin/python",
               str(app)]
    started = time.perf_counter()
    result = subprocess.run(command, env=job_env(target), capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"the application with {archive.name} failed:\n{result.stderr[-4000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=3, help="applications per archive")
    args = parser.parse_args()
    if not PACKED_ENV.exists():
        raise SystemExit(f"needs {PACKED_ENV}: run `make cluster-env` first")
    archives = {"whole": whole_archive(), "slim": PACKED_ENV}
    seconds: dict[str, list[float]] = {name: [] for name in archives}
    with tempfile.TemporaryDirectory(prefix="vl-ship-bench-") as work:
        app = Path(work) / "app.py"
        app.write_text(APP)
        cluster = harness.up()
        try:
            target = Target(master=cluster.master_url, lake_root=cluster.lake_root, raw="",
                            tracking_uri=cluster.tracking_uri, spark_conf_dir=cluster.spark_conf_dir)
            for run in range(args.limit):
                for name, archive in archives.items():
                    seconds[name].append(submit(target, archive, app))
                    print(f"application {run + 1}/{args.limit}, {name} archive: {seconds[name][-1]:.1f} s", flush=True)
        finally:
            harness.down()
    figures = {name: {"bytes": archive.stat().st_size, "unpacked_bytes": unpacked_bytes(archive),
                      "seconds_per_application": round(statistics.median(seconds[name]), 1),
                      "runs": [round(s, 1) for s in seconds[name]]} for name, archive in archives.items()}
    for name, figure in figures.items():
        print(f"{name}: {figure['bytes'] / 1e6:.0f} MB ({figure['unpacked_bytes'] / 1e9:.2f} GB unpacked), "
              f"{figure['seconds_per_application']} s per application (median of {args.limit})")
    ratio = figures["slim"]["seconds_per_application"] / figures["whole"]["seconds_per_application"]
    figures["slim_over_whole_seconds"] = round(ratio, 2)
    figures["slim_over_whole_bytes"] = round(figures["slim"]["bytes"] / figures["whole"]["bytes"], 2)
    print(f"slim / whole: x{ratio:.2f} seconds per application, x{figures['slim_over_whole_bytes']:.2f} bytes")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
