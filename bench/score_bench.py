"""Scoring throughput on the shared MNIST set: the batch scoring job vs in-process predict, in one run.

    python bench/score_bench.py                   # all 70,000 images (make bench-score)
    python bench/score_bench.py --limit 5000

Setup (not timed): ingest, a LeNet classifier (1 epoch) and an autoencoder detector (1 epoch), registered.
Timed: (a) `visionlake score` over the whole images table, from the call to the committed predictions version
(decode, classify, anomaly-score, write, commit), on a warm session; (b) the upper bound: in-process
`classifier.predict` + `scorer.score` over the same images already decoded into one NumPy array. Target (a)/(b) >= 0.7.
The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _common import archive_available, mnist_config, sample_archive, workspace
from visionlake.operate.cli import configure_logging
from visionlake.train.detectors import train_detector
from visionlake.models.scorers import load_scorer
from visionlake.lake.images import decode_stored_image
from visionlake.ingest.job import ingest
from visionlake.lake.store import Lake
from visionlake.score.job import score_dataset
from visionlake.spark import spark_session
from visionlake.train.classifier import train_classifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use N images instead of all 70,000")
    parser.add_argument("--batch", type=int, default=512, help="score.batch_size and the in-process batch")
    args = parser.parse_args()
    configure_logging()
    if not archive_available():
        return 0
    with workspace("vl-score-bench-") as work:
        source = sample_archive(args.limit, work / "sample.tar.gz")
        config = mnist_config(work, source, "train.epochs=1", "train.batch_size=128", "generative.epochs=1",
                              "generative.batch_size=128", "generative.quality.every_epochs=1000",
                              "anomaly.method=autoencoder", "score.dataset=mnist", f"score.batch_size={args.batch}",
                              "score.anomaly_maps=false")
        with spark_session(config.spark) as spark:
            spark.sparkContext.setLogLevel("ERROR")
            ingest(spark, config)
            train_classifier(spark, config)
            train_detector(spark, config)
            score_dataset(spark, config)  # warms the Python workers (TensorFlow import, model loads)
            started = time.perf_counter()
            summary = score_dataset(spark, config)
            job_seconds = time.perf_counter() - started
            rows = Lake(spark, config.lake.root).read_table("mnist", "images").select("image").collect()
        images = np.stack([decode_stored_image(row["image"]) for row in rows]).astype(np.float32) / 255.0
        import mlflow.tensorflow

        classifier = mlflow.tensorflow.load_model("models:/visionlake-classifier@champion")
        scorer = load_scorer("models:/visionlake-anomaly@champion")
        classifier.predict(images[:args.batch], batch_size=args.batch, verbose=0)  # warm-up (graph tracing)
        scorer.score(images[:args.batch])
        started = time.perf_counter()
        classifier.predict(images, batch_size=args.batch, verbose=0)
        scorer.score(images)
        in_process_seconds = time.perf_counter() - started
    job_rate, in_process_rate = summary.scored / job_seconds, len(images) / in_process_seconds
    result = {"images": summary.scored, "batch": args.batch, "job_images_per_s": round(job_rate),
              "job_seconds": round(job_seconds, 1), "in_process_images_per_s": round(in_process_rate),
              "in_process_seconds": round(in_process_seconds, 1), "ratio": round(job_rate / in_process_rate, 3)}
    print(f"scoring job: {job_rate:.0f} images/s ({summary.scored} images, {job_seconds:.1f}s, warm session) vs "
          f"in-process predict on decoded arrays {in_process_rate:.0f} images/s = {result['ratio']:.2f} (target >= 0.7)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
