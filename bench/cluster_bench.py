"""The whole pipeline on the two-node cluster vs the same pipeline on local[2], in one run.

    python bench/cluster_bench.py                 # 5 x 120 demo images (make bench-cluster)
    python bench/cluster_bench.py --limit 300

Both runs submit the same six jobs through spark-submit with the same settings (tests/cluster/pipeline.py): ingest,
classifier, VAE anomaly detector, cDCGAN, generate, score. local[2]: one JVM, the lake and a SQLite MLflow store on
local disk. Cluster: the harness's master and two 1-core workers without a shared local disk (packed environment via
--archives, lake on the shared folder, MLflow tracking server). Wall time per stage and in total, and the ratio
cluster / local[2]. Needs `make cluster-env` and root (mount namespaces). The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster import harness  # noqa: E402 - the repository root must be importable first
from tests.cluster.pipeline import PACKED_ENV, SETTINGS, STAGES, Target, run_stage, write_raw  # noqa: E402


def build_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(folder), str(REPO)], check=True)
    return next(folder.glob("visionlake-*.whl"))


def run_pipeline(target: Target, wheel: Path, workdir: Path, extra: list[str]) -> dict[str, float]:
    write_raw(target)
    seconds = {}
    for stage, job, flags in STAGES:
        result, seconds[stage] = run_stage(target, job, flags, wheel, workdir, extra)
        if result.returncode != 0:
            raise SystemExit(f"{stage} failed on {target.master}:\n{result.stdout[-4000:]}")
        print(f"{target.master}: {stage} {seconds[stage]:.1f} s", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=600, help="demo images in all (5 classes)")
    args = parser.parse_args()
    if not PACKED_ENV.exists():
        raise SystemExit(f"needs {PACKED_ENV}: run `make cluster-env` first")
    extra = [f"demo.images_per_class={max(20, args.limit // 5)}"]
    work = Path(tempfile.mkdtemp(prefix="vl-cluster-bench-"))
    try:
        wheel = build_wheel(work / "dist")
        local = Target(master="local[2]", lake_root=str(work / "local" / "lake"), raw=str(work / "local" / "raw"),
                       tracking_uri=f"sqlite:///{work / 'local' / 'mlflow.db'}")
        (work / "local").mkdir()
        local_seconds = run_pipeline(local, wheel, work / "local", extra + ["tracking.artifact_root=mlartifacts"])
        cluster = harness.up()
        try:
            remote = Target(master=cluster.master_url, lake_root=cluster.lake_root,
                            raw=f"{cluster.shared}/raw/demo-raw", tracking_uri=cluster.tracking_uri,
                            spark_conf_dir=cluster.spark_conf_dir)
            (work / "cluster").mkdir()
            cluster_seconds = run_pipeline(remote, wheel, work / "cluster", extra)
        finally:
            harness.down()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local_total, cluster_total = sum(local_seconds.values()), sum(cluster_seconds.values())
    figures = {"images": 5 * max(20, args.limit // 5), "settings": SETTINGS,
               "local2_seconds": {k: round(v, 1) for k, v in local_seconds.items()},
               "cluster_seconds": {k: round(v, 1) for k, v in cluster_seconds.items()},
               "local2_total_s": round(local_total, 1), "cluster_total_s": round(cluster_total, 1),
               "cluster_over_local2": round(cluster_total / local_total, 2)}
    print(f"pipeline wall time: local[2] {local_total:.0f} s, two-node cluster {cluster_total:.0f} s "
          f"(x{cluster_total / local_total:.2f})")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
