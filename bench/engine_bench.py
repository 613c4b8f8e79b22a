"""Training engines and readers, and the two stacks, side by side on the shared MNIST set, in one run.

    python bench/engine_bench.py                        # all 70,000 images, 3 epochs (make bench-engines)
    python bench/engine_bench.py --limit 6000 --epochs 1

The pinned stack (this interpreter): ingest, then the LeNet classifier once per engine x reader (horovod or
tf_distribute, petastorm or arrow) with the same seed, data plan and schedule, then an autoencoder detector and the
scoring job. Figures: training images/s (the epochs' mean, as the rank loop measures it: every rank's images over the
epoch's wall time), test accuracy, ingest and scoring images/s (scoring on a warm session, as score_bench times it).
The current stack (.venv-current, `make setup-current`): the same steps in its own process and workspace, with
tf_distribute + arrow, the only engine and reader it has. Baseline: horovod + petastorm on the pinned stack; every
ratio is against it. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import ROOT, archive_available, mnist_config, sample_archive, workspace

PINNED_RUNS = (("horovod", "petastorm"), ("horovod", "arrow"), ("tf_distribute", "petastorm"),
               ("tf_distribute", "arrow"))
CURRENT_RUNS = (("tf_distribute", "arrow"),)
CURRENT_PYTHON = ROOT / ".venv-current" / "bin" / "python"


def measure_stack(limit: int | None, epochs: int, runs) -> dict:
    """Ingest, train each (engine, reader), train a detector and score, in this interpreter's stack."""
    from visionlake.ingest.job import ingest
    from visionlake.operate.cli import configure_logging
    from visionlake.score.job import score_dataset
    from visionlake.spark import spark_session
    from visionlake.train.classifier import train_classifier
    from visionlake.train.detectors import train_detector

    configure_logging()
    figures: dict = {"python": sys.version.split()[0], "stack": _versions()}
    with workspace("vl-engine-bench-") as work:
        source = sample_archive(limit, work / "sample.tar.gz")
        engine, reader = runs[0]  # the stack's baseline trains the detector scoring uses
        config = mnist_config(work, source, f"train.epochs={epochs}", "train.batch_size=64", "train.model=lenet",
                              "generative.epochs=1", "generative.batch_size=128", "anomaly.method=autoencoder",
                              "score.dataset=mnist", "score.batch_size=512", "score.anomaly_maps=false",
                              f"train.engine={engine}", f"train.reader={reader}")
        with spark_session(config.spark) as spark:
            spark.sparkContext.setLogLevel("ERROR")
            ingested = ingest(spark, config)
            images = sum(ingested.total.values())
            figures["ingest_images_per_s"] = round(images / ingested.seconds, 1)
            figures["images"] = images
            for engine, reader in runs:
                run = mnist_config(work, source, f"train.epochs={epochs}", "train.batch_size=64",
                                   "train.model=lenet", f"train.engine={engine}", f"train.reader={reader}")
                started = time.perf_counter()
                summary = train_classifier(spark, run)
                rates = [epoch["images_per_s"] for epoch in summary.history]
                figures[f"{engine}+{reader}"] = {"train_images_per_s": round(sum(rates) / len(rates), 1),
                                                 "test_accuracy": round(summary.test_accuracy, 4),
                                                 "wall_seconds": round(time.perf_counter() - started, 1)}
            train_detector(spark, config)
            score_dataset(spark, config)  # warms the Python workers (TensorFlow import, model loads)
            started = time.perf_counter()
            scored = score_dataset(spark, config)
            figures["score_images_per_s"] = round(scored.scored / (time.perf_counter() - started), 1)
    return figures


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tensorflow-cpu", "keras", "numpy", "pyarrow", "pandas", "pyspark", "horovod", "petastorm"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def measure_current(limit: int | None, epochs: int) -> dict | None:
    if not CURRENT_PYTHON.exists():
        print(f"the current stack is not set up ({CURRENT_PYTHON} missing): run `make setup-current`; "
              "its figures are left out")
        return None
    command = [str(CURRENT_PYTHON), __file__, "--part", "current", "--epochs", str(epochs)]
    if limit:
        command += ["--limit", str(limit)]
    # This process's Spark session pointed PYSPARK_PYTHON at this interpreter; the other stack brings its own.
    env = {key: value for key, value in os.environ.items() if key not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if finished.returncode != 0:
        print(finished.stdout[-2000:], finished.stderr[-4000:], sep="\n")
        raise SystemExit(f"the current stack's part failed (exit {finished.returncode})")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use N images instead of all 70,000")
    parser.add_argument("--epochs", type=int, default=3, help="classifier epochs per engine and reader")
    parser.add_argument("--part", choices=("pinned", "current"), default=None,
                        help=argparse.SUPPRESS)  # one stack only, as the other stack's interpreter runs it
    args = parser.parse_args()
    if not archive_available():
        return 0
    if args.part:
        print(json.dumps(measure_stack(args.limit, args.epochs,
                                       CURRENT_RUNS if args.part == "current" else PINNED_RUNS)))
        return 0
    pinned = measure_stack(args.limit, args.epochs, PINNED_RUNS)
    current = measure_current(args.limit, args.epochs)
    baseline = pinned["horovod+petastorm"]
    rows = [("pinned", f"{engine}+{reader}", pinned[f"{engine}+{reader}"]) for engine, reader in PINNED_RUNS]
    if current:
        rows.append(("current", "tf_distribute+arrow", current["tf_distribute+arrow"]))
    print(f"{pinned['images']} images, {args.epochs} epoch(s), LeNet, 2 ranks, batch 64/rank")
    print(f"{'stack':<8} {'engine+reader':<24} {'train img/s':>12} {'ratio':>6} {'test acc':>9}")
    for stack, name, figures in rows:
        ratio = figures["train_images_per_s"] / baseline["train_images_per_s"]
        print(f"{stack:<8} {name:<24} {figures['train_images_per_s']:>12,.0f} {ratio:>6.2f} "
              f"{figures['test_accuracy']:>9.4f}")
    result = {"images": pinned["images"], "epochs": args.epochs, "pinned": pinned, "current": current,
              "train_ratio_vs_horovod_petastorm": {f"{stack}:{name}": round(
                  figures["train_images_per_s"] / baseline["train_images_per_s"], 3) for stack, name, figures in rows}}
    for figure in ("ingest_images_per_s", "score_images_per_s"):
        line = f"{figure}: pinned {pinned[figure]:,.0f}"
        if current:
            result[f"{figure}_current_vs_pinned"] = round(current[figure] / pinned[figure], 3)
            line += f", current {current[figure]:,.0f} ({result[f'{figure}_current_vs_pinned']:.2f}x)"
        print(line)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
