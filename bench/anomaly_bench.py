"""One-class anomaly benchmark on the shared MNIST set: per-digit and mean AUROC of each scorer.

    python bench/anomaly_bench.py                                   # all digits, autoencoder + vae + gan
    python bench/anomaly_bench.py --limit 7000 --digits 0,1 --methods autoencoder --epochs 2

Protocol (as in Deep SVDD, OCGAN, GeoTrans): for each digit d, train the detector on the training images of d only
(`anomaly.normal_labels=[d]`, through `visionlake train anomaly`), score the whole test split with the registered
scorer, and report the AUROC of "not d". Anchors: Deep SVDD 0.948, OCGAN 0.975, GeoTrans 0.980 (target >= 0.97).
The classifier-energy scorer needs a classifier of all ten digits, so it does not fit a one-class protocol; it is
reported as not applicable. The table is logged to MLflow (run "anomaly-bench"). The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _common import archive_available, mnist_config, sample_archive, workspace
from visionlake.evaluate.anomaly import roc_auc
from visionlake.operate.cli import configure_logging
from visionlake.lake.reader import InputSpec
from visionlake.train.detectors import train_detector
from visionlake.models.scorers import load_scorer
from visionlake.ingest.job import ingest
from visionlake.lake.store import Lake
from visionlake.evaluate.generative import read_images
from visionlake.spark import spark_session
from visionlake.tracking import connect

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use N images instead of all 70,000")
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--methods", default="autoencoder,vae,gan")
    parser.add_argument("--epochs", type=int, default=15, help="detector training epochs (GAN: its DCGAN)")
    args = parser.parse_args()
    configure_logging()
    if not archive_available():
        return 0
    digits = [int(d) for d in args.digits.split(",")]
    methods = args.methods.split(",")
    started = time.perf_counter()
    with workspace("vl-anomaly-bench-") as work:
        source = sample_archive(args.limit, work / "sample.tar.gz")

        def config_for(*overrides: str):
            return mnist_config(work, source, f"generative.epochs={args.epochs}", "generative.batch_size=64",
                                "generative.quality.every_epochs=1000", "anomaly.encoder_epochs=5", *overrides)

        auroc: dict[str, dict[str, float]] = {method: {} for method in methods}
        seconds: dict[str, float] = {method: 0.0 for method in methods}
        with spark_session(config_for().spark) as spark:
            spark.sparkContext.setLogLevel("ERROR")
            ingest(spark, config_for())
            lake = Lake(spark, config_for().lake.root)
            test_files = tuple(lake.table_files("mnist", "images", "test", lake.read_manifest("mnist")))
            test_images, test_labels = read_images(InputSpec((28, 28, 1), batch_size=512), test_files, 10 ** 9)
            test_images = (test_images + 1.0) / 2.0
            for method in methods:
                for digit in digits:
                    began = time.perf_counter()
                    summary = train_detector(spark, config_for(
                        f"anomaly.method={method}", f"anomaly.normal_labels=[{DIGITS[digit]}]",
                        f"anomaly.registered_model=bench-anomaly-{method}"))
                    scores = load_scorer(f"models:/bench-anomaly-{method}/{summary.model_version}").score(test_images)
                    auroc[method][DIGITS[digit]] = roc_auc(scores, test_labels != digit)
                    seconds[method] += time.perf_counter() - began
                    print(f"{method} digit {digit}: AUROC {auroc[method][DIGITS[digit]]:.4f}", flush=True)
        means = {method: float(np.mean(list(values.values()))) for method, values in auroc.items()}
        default = max(means, key=means.get)
        _log_to_mlflow(config_for(), auroc, means, default)
    print("\nper-digit AUROC (normal = that digit, anomalies = every other test digit)")
    print("method       " + " ".join(f"{DIGITS[d]:>6}" for d in digits) + "    mean")
    for method, values in auroc.items():
        print(f"{method:<12} " + " ".join(f"{values[DIGITS[d]]:6.4f}" for d in digits) + f"  {means[method]:6.4f}")
    print(f"default by measurement: {default} (mean AUROC {means[default]:.4f}; target >= 0.97; Deep SVDD 0.948, "
          f"OCGAN 0.975, GeoTrans 0.980); classifier energy: not applicable to one-class training")
    result = {"images": args.limit or 70000, "epochs": args.epochs, "digits": digits,
              "auroc": {m: {k: round(v, 4) for k, v in values.items()} for m, values in auroc.items()},
              "mean_auroc": {m: round(v, 4) for m, v in means.items()}, "default": default,
              "seconds_per_detector": {m: round(s / len(digits)) for m, s in seconds.items()},
              "total_seconds": round(time.perf_counter() - started)}
    print(json.dumps(result))
    return 0


def _log_to_mlflow(config, auroc, means, default) -> None:
    import mlflow

    mlflow.set_experiment(experiment_id=connect(config.tracking))
    with mlflow.start_run(run_name="anomaly-bench"):
        for method, values in auroc.items():
            mlflow.log_metric(f"{method}_mean_auroc", means[method])
            for digit, value in values.items():
                mlflow.log_metric(f"{method}_auroc_{digit}", value)
        mlflow.set_tag("default_method", default)
        mlflow.log_dict({"auroc": auroc, "mean_auroc": means, "default": default}, "anomaly_bench.json")


if __name__ == "__main__":
    sys.exit(main())
