"""Ingest benchmark: the Spark ingest job vs a single-process baseline doing the same work, on the shared MNIST set.

    python bench/ingest_bench.py            # all 70,000 files (make bench-ingest)
    python bench/ingest_bench.py --limit 5000

The archive is extracted once to a temp folder. The Spark figure runs from the ``ingest()`` call (session already up)
until the manifest is committed, file listing included. The baseline decodes, converts, normalises, hashes,
PNG-encodes and writes Parquet with the same pure functions in one Python process. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from _common import ARCHIVE, ROOT, archive_available, decode_in_one_process, workspace
from visionlake.operate.cli import configure_logging
from visionlake.config import load_config
from visionlake.ingest.decode import DecodePlan
from visionlake.ingest.job import ingest
from visionlake.spark import spark_session

BATCH = 2048


def extract(archive: Path, target: Path, limit: int | None) -> list[Path]:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".png")]
        members.sort(key=lambda m: m.name)
        if limit:
            members = members[:: max(1, len(members) // limit)][:limit]
        tar.extractall(target, members=members)
    return [target / m.name for m in members]


def run_baseline(files: list[Path], config, output: Path) -> float:
    """Single process: read, decode, normalise, hash, PNG-encode, write one Parquet file per split."""
    plan = DecodePlan(config.ingest, tuple(config.ingest.label.names))
    started = time.perf_counter()
    decoded = decode_in_one_process(files, plan, BATCH)
    accepted = decoded[decoded["reason"].isna()]
    for split, rows in accepted.groupby("split"):
        pq.write_table(pa.Table.from_pandas(rows.drop(columns=["reason", "detail"]), preserve_index=False),
                       output / f"split={split}.parquet", row_group_size=10_000)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use N images (spread over the set) instead of all")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides for the Spark run")
    args = parser.parse_args()
    configure_logging()
    if not archive_available():
        return 0
    with workspace("vl-ingest-bench-") as work:
        files = extract(ARCHIVE, work / "raw", args.limit)
        config = load_config(str(ROOT / "conf" / "mnist.yaml"),
                             [f"ingest.source.uri={work / 'raw' / 'mnist'}", f"lake.root={work / 'lake'}",
                              "spark.conf.spark.ui.enabled=false", *args.overrides])
        (work / "baseline").mkdir()
        baseline_seconds = run_baseline(files, config, work / "baseline")
        with spark_session(config.spark) as spark:
            spark.sparkContext.setLogLevel("ERROR")
            cores = spark.sparkContext.defaultParallelism
            # "cold": the session's first Python job (workers start and import their libraries, the JIT warms up);
            # "warm": the same ingest into a fresh dataset on the same session, as a long-lived session runs it.
            timings = {}
            for run, dataset in (("cold", "mnist_cold"), ("warm", "mnist")):
                started = time.perf_counter()
                summary = ingest(spark, replace(config, ingest=replace(config.ingest, dataset=dataset)))
                timings[run] = time.perf_counter() - started
        n = len(files)
        result = {"images": n, "cores": cores, "baseline_seconds": round(baseline_seconds, 2),
                  "baseline_images_per_s": round(n / baseline_seconds),
                  "ingested": summary.images_added, "quarantined": sum(summary.quarantined.values())}
        print(f"single-process:        {round(n / baseline_seconds):>7} images/s ({baseline_seconds:.1f}s)")
        for run, seconds in timings.items():
            result.update({f"spark_{run}_seconds": round(seconds, 2), f"spark_{run}_images_per_s": round(n / seconds),
                           f"{run}_ratio_vs_baseline": round(baseline_seconds / seconds, 2)})
            print(f"Spark ingest ({run}):   {round(n / seconds):>7} images/s ({seconds:.1f}s, {cores} cores), "
                  f"ratio {baseline_seconds / seconds:.2f}x")
        print("targets: ratio >= 1.5x and >= 6000 images/s")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
