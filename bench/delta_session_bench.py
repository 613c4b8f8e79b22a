"""What a new JVM's first use of a Delta Lake table costs, per session setting, against Delta's defaults, in one run.

    python bench/delta_session_bench.py              # 1,000 rows (make bench-delta-session)
    python bench/delta_session_bench.py --limit 5000

Each setting runs in a fresh process (a fresh JVM, `local[2]`, opened by `visionlake.spark.start_session`): write
`--limit` rows of 2 KB partitioned by `split`, read them, append them again, and plan one split's files of the
second version (`versionAsOf` + `inputFiles()`, what the training readers do). Prints the seconds of each step, the
machine's CPU-seconds, and each setting's total / the defaults' total. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "defaults": {"spark.databricks.delta.snapshotPartitions": "50"},  # Delta's own default
    "visionlake": {},                                                  # SESSION_DEFAULTS: snapshotPartitions=2
    "visionlake + C1 JIT": {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"},  # what the suite runs
}
STEPS = ("session", "write", "read", "append", "plan")


def _busy_jiffies() -> int:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


def measure(rows: int, conf: dict[str, str]) -> dict[str, float]:
    """One fresh session's steps (run in the child process)."""
    from pyspark.sql import functions as F

    from visionlake.config import SparkConfig
    from visionlake.spark import spark_session

    seconds, started = {}, time.perf_counter()
    with spark_session(SparkConfig(master="local[2]", conf={"spark.ui.enabled": "false", **conf})) as spark, \
            tempfile.TemporaryDirectory() as folder:
        seconds["session"] = time.perf_counter() - started
        frame = spark.range(rows).select("id", (F.col("id") % 3).cast("string").alias("split"),
                                         F.expr("repeat('x', 2048)").alias("image"))
        path = f"{folder}/table"
        steps = {"write": lambda: frame.write.format("delta").partitionBy("split").save(path),
                 "read": lambda: spark.read.format("delta").load(path).count(),
                 "append": lambda: frame.write.format("delta").mode("append").partitionBy("split").save(path),
                 "plan": lambda: spark.read.format("delta").option("versionAsOf", 1).load(path)
                 .where("split = '1'").inputFiles()}
        for step, run in steps.items():
            started = time.perf_counter()
            run()
            seconds[step] = time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1000, help="rows per write (default 1000)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.limit, json.loads(args.child))))
        return
    results = {}
    for name, conf in SETTINGS.items():
        before, started = _busy_jiffies(), time.perf_counter()
        child = subprocess.run([sys.executable, __file__, "--limit", str(args.limit), "--child", json.dumps(conf)],
                               capture_output=True, text=True, check=True)
        steps = json.loads(child.stdout.strip().splitlines()[-1])
        results[name] = {**{k: round(v, 2) for k, v in steps.items()},
                         "total": round(sum(steps.values()), 2),
                         "process": round(time.perf_counter() - started, 2),
                         "cpu_s": round((_busy_jiffies() - before) / os.sysconf("SC_CLK_TCK"), 1)}
    baseline = results["defaults"]["total"]
    print(f"first Delta use in a fresh local[2] session, {args.limit} rows (seconds)")
    print(f"{'setting':22s}" + "".join(f"{s:>9s}" for s in (*STEPS, "total", "CPU-s")) + "  vs defaults")
    for name, row in results.items():
        row["ratio_vs_defaults"] = round(row["total"] / baseline, 2)
        print(f"{name:22s}" + "".join(f"{row[s]:9.1f}" for s in (*STEPS, "total", "cpu_s"))
              + f"  {row['ratio_vs_defaults']:.2f}x")
    print(json.dumps({"bench": "delta_session", "rows": args.limit, "baseline": "defaults", "results": results}))


if __name__ == "__main__":
    main()
