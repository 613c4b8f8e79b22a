"""The lake's cost of many small incremental ingests: Delta Lake against plain Parquet appends, in one run.

    python bench/lake_bench.py                  # 100 ingests of 20 MNIST files each (make bench-lake)
    python bench/lake_bench.py --limit 10 --per-ingest 50

One warm Spark session (`conf/mnist.yaml`, the lake in a temp folder) runs ``--limit`` incremental ingests, each of
``--per-ingest`` new files dropped into the source folder. After ingest 1, 10, 100 (and the last) it takes:

- the ingest's seconds and its lake commit's seconds (``Lake.commit_ingest``: quarantine, then the images ``MERGE``
  on id), the median of the last five ingests;
- the time to plan a training read as a new job does (a new ``Lake``, Delta's log cache cleared: the dataset's
  description, then the train split's files from the Delta log; the median of three), and the images table's file
  count;
- the same on a copy of the lake after ``optimize`` (the copy keeps the sequence itself uncompacted).

The baseline is the format before Delta, without its manifests: each run's new rows appended as plain Parquet files
(``mode("append")``, the same partitioning) and planned by listing the folder (``inputFiles()``). It has neither
atomic commits nor de-duplication, which is what the Delta figures pay for. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

from _common import ARCHIVE, ROOT, archive_available, workspace
from visionlake.config import load_config
from visionlake.ingest.job import ingest
from visionlake.lake.store import Lake
from visionlake.operate.cli import configure_logging
from visionlake.spark import spark_session

CHECKPOINTS = (1, 10, 100)
WINDOW = 5  # ingests whose median commit time a checkpoint reports
REPEATS = 3  # plans whose median a checkpoint reports


def stage_files(archive: Path, target: Path, count: int) -> list[Path]:
    """``count`` training PNGs spread over the archive, extracted under ``target``, in a shuffled-by-name order."""
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".png")
                          and "/train/" in m.name), key=lambda m: m.name)
        members = members[:: max(1, len(members) // count)][:count]
        tar.extractall(target, members=members)
    return [target / m.name for m in members]


class Timed:
    """Seconds of each call of ``owner.name`` while the block runs (wraps the method on the class)."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.seconds = owner, name, []

    def __enter__(self) -> "Timed":
        original = self.original = getattr(self.owner, self.name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - started)
        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.owner, self.name, self.original)


def plan_delta(spark, config, root: str) -> tuple[float, int]:
    """Seconds to plan the train split of the latest version as a new job does (a new Lake, Delta's log cache
    cleared), and the images table's file count."""
    def plan() -> float:
        spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
        started = time.perf_counter()
        planned = Lake(spark, root, settings=config.lake)
        planned.table_files(config.ingest.dataset, "images", "train", planned.read_manifest(config.ingest.dataset))
        return time.perf_counter() - started

    seconds = statistics.median(plan() for _ in range(REPEATS))
    lake = Lake(spark, root, settings=config.lake)
    manifest = lake.read_manifest(config.ingest.dataset)
    files = sum(len(lake.table_files(config.ingest.dataset, "images", split, manifest))
                for split in ("train", "val", "test"))
    return seconds, files


def plan_parquet(spark, folder: str) -> tuple[float, int]:
    def plan() -> float:
        started = time.perf_counter()
        spark.read.parquet(folder).where("split = 'train'").inputFiles()
        return time.perf_counter() - started

    seconds = statistics.median(plan() for _ in range(REPEATS))
    return seconds, len(spark.read.parquet(folder).inputFiles())


def append_parquet(spark, config, run_id: str, folder: str) -> float:
    """The run's new rows (read back from the lake first, outside the timing) appended as plain Parquet."""
    lake = Lake(spark, config.lake.root, settings=config.lake)
    rows = lake.read_latest(config.ingest.dataset, "images").where(f"run_id = '{run_id}'").cache()
    rows.count()
    started = time.perf_counter()
    rows.write.mode("append").partitionBy("split").parquet(folder)
    seconds = time.perf_counter() - started
    rows.unpersist()
    return seconds


def optimized_copy(spark, config, work: Path, step: int) -> dict[str, float]:
    """Optimize a copy of the lake as it is after ``step`` ingests; its optimize and plan seconds and files."""
    copy = work / f"lake-optimized-{step}"
    shutil.copytree(work / "lake", copy)
    copied = replace(config, lake=replace(config.lake, root=str(copy)))
    started = time.perf_counter()
    Lake(spark, str(copy), settings=copied.lake).optimize(config.ingest.dataset)
    optimize_seconds = time.perf_counter() - started
    plan_seconds, files = plan_delta(spark, copied, str(copy))
    shutil.rmtree(copy, ignore_errors=True)
    return {"optimize_seconds": optimize_seconds, "plan_seconds": plan_seconds, "files": files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=100, help="incremental ingests to run (default 100)")
    parser.add_argument("--per-ingest", type=int, default=20, help="new files per ingest (default 20)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides for the Spark run")
    args = parser.parse_args()
    configure_logging()
    logging.getLogger("visionlake").setLevel(logging.WARNING)  # a hundred ingest summaries; this prints its own
    if not archive_available():
        return 0
    checkpoints = sorted({c for c in CHECKPOINTS if c <= args.limit} | {args.limit})
    with workspace("vl-lake-bench-") as work:
        staged = stage_files(ARCHIVE, work / "staged", args.limit * args.per_ingest)
        source = work / "raw"
        config = load_config(str(ROOT / "conf" / "mnist.yaml"),
                             [f"ingest.source.uri={source}", f"lake.root={work / 'lake'}",
                              "spark.conf.spark.ui.enabled=false", *args.overrides])
        baseline = str(work / "parquet" / "images")
        results, ingest_seconds, commit_seconds, append_seconds = [], [], [], []
        with spark_session(config.spark) as spark, Timed(Lake, "commit_ingest") as commits:
            spark.sparkContext.setLogLevel("ERROR")
            for step in range(1, args.limit + 1):
                for path in staged[(step - 1) * args.per_ingest: step * args.per_ingest]:
                    target = source / path.relative_to(work / "staged")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(path, target)
                if step == 1:  # the session's first ingest and Parquet append warm the JVM up, untimed
                    warm = ingest(spark, replace(config, ingest=replace(config.ingest, dataset="warmup")))
                    append_parquet(spark, replace(config, ingest=replace(config.ingest, dataset="warmup")),
                                   warm.run_id, str(work / "parquet" / "warmup"))
                started = time.perf_counter()
                summary = ingest(spark, config)
                ingest_seconds.append(time.perf_counter() - started)
                commit_seconds.append(commits.seconds[-1])
                append_seconds.append(append_parquet(spark, config, summary.run_id, baseline))
                print(f"ingest {step}/{args.limit}: +{summary.images_added} images, version {summary.version}, "
                      f"{ingest_seconds[-1]:.1f}s (commit {commit_seconds[-1]:.1f}s)", flush=True)
                if step not in checkpoints:
                    continue
                delta_plan, delta_files = plan_delta(spark, config, config.lake.root)
                parquet_plan, parquet_files = plan_parquet(spark, baseline)
                window = slice(max(0, step - WINDOW), step)
                row = {"ingests": step, "version": summary.version,
                       "ingest_seconds": statistics.median(ingest_seconds[window]),
                       "commit_seconds": statistics.median(commit_seconds[window]),
                       "parquet_append_seconds": statistics.median(append_seconds[window]),
                       "plan_seconds": delta_plan, "parquet_plan_seconds": parquet_plan,
                       "files": delta_files, "parquet_files": parquet_files,
                       "optimized": optimized_copy(spark, config, work, step)}
                results.append(row)
                report(row)
            cores = spark.sparkContext.defaultParallelism
        rounded = [{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "optimized"}
                   | {"optimized": {k: round(v, 3) for k, v in row["optimized"].items()}} for row in results]
        print(json.dumps({"per_ingest": args.per_ingest, "cores": cores, "baseline": "plain Parquet appends",
                          "checkpoints": rounded}))
    return 0


def report(row: dict) -> None:
    optimized = row["optimized"]
    print(f"after {row['ingests']:>3} ingests (images version {row['version']}):\n"
          f"  ingest {row['ingest_seconds']:.2f}s, of it the commit {row['commit_seconds']:.2f}s; "
          f"plain Parquet append {row['parquet_append_seconds']:.2f}s "
          f"(commit ratio {row['commit_seconds'] / row['parquet_append_seconds']:.1f}x)\n"
          f"  plan a training read {row['plan_seconds']:.2f}s vs listing Parquet {row['parquet_plan_seconds']:.2f}s "
          f"(ratio {row['plan_seconds'] / row['parquet_plan_seconds']:.1f}x); "
          f"files {row['files']} vs {row['parquet_files']}\n"
          f"  after optimize ({optimized['optimize_seconds']:.1f}s): plan {optimized['plan_seconds']:.2f}s "
          f"(ratio {optimized['plan_seconds'] / row['parquet_plan_seconds']:.1f}x), files {int(optimized['files'])}",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
