"""Generative-model benchmark on the shared MNIST set: quality figures and training speed in one run.

    python bench/gan_bench.py                     # all 70,000 images (make bench-gan)
    python bench/gan_bench.py --limit 6000 --gan-epochs 1 --vae-epochs 1

1. A LeNet judge classifier (the FCD feature space and the conditional-accuracy labeller), registered as champion.
2. cDCGAN: conditional accuracy (target >= 95%), FCD of 10,000 samples vs the test split next to FCD(train, test).
3. DCGAN, VAE, autoencoder: training images/s of each (2 Horovod ranks); VAE test reconstruction MSE.
4. Low-label experiment: a classifier trained on 1% of the real training images, without and with half of each
   batch drawn from cDCGAN samples written to the lake (`visionlake generate`); test accuracy of both.
Sample grids and curves stay in the run's MLflow store (printed path). The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from _common import archive_available, mnist_config, sample_archive, workspace
from visionlake.operate.cli import configure_logging
from visionlake.train.generative import train_generative
from visionlake.ingest.job import ingest
from visionlake.spark import spark_session
from visionlake.score.synthetic import generate_synthetic
from visionlake.train.classifier import train_classifier

LOW_LABEL_SHARE = 0.01
MIN_LOW_LABEL = 300


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="use N images instead of all 70,000")
    parser.add_argument("--gan-epochs", type=int, default=10)
    parser.add_argument("--vae-epochs", type=int, default=5)
    parser.add_argument("--keep", metavar="FOLDER", help="keep the lake and MLflow store here (for the sample grids)")
    args = parser.parse_args()
    configure_logging()
    if not archive_available():
        return 0
    with workspace("vl-gan-bench-") as work:
        source = sample_archive(args.limit, work / "sample.tar.gz")
        train_members = 60000 if not args.limit else round(args.limit * 6 / 7)
        # At least a few hundred images, so that a quick --limit run still has batches for both ranks.
        low_label = sample_archive(max(MIN_LOW_LABEL, round(train_members * LOW_LABEL_SHARE)), work / "low-label.tar.gz",
                                   keep=lambda name: "/train/" in name)
        test_only = sample_archive(args.limit and args.limit // 7, work / "test.tar.gz",
                                   keep=lambda name: "/test/" in name)

        def config_for(*overrides: str):
            return mnist_config(work, source, "generative.batch_size=64", "generative.quality.every_epochs=5",
                                *overrides)

        figures: dict[str, float] = {}
        with spark_session(config_for().spark) as spark:
            spark.sparkContext.setLogLevel("ERROR")
            ingest(spark, config_for())
            judge = train_classifier(spark, config_for("train.model=lenet", "train.epochs=4", "train.batch_size=64",
                                                       "train.augment.flip=false", "train.lr_schedule=cosine"))
            figures["judge_test_accuracy"] = judge.test_accuracy
            runs = {"cdcgan": train_generative(spark, config_for("generative.model=cdcgan",
                                                                 f"generative.epochs={args.gan_epochs}")),
                    "dcgan": train_generative(spark, config_for("generative.model=dcgan", "generative.epochs=1")),
                    "vae": train_generative(spark, config_for("generative.model=vae",
                                                              f"generative.epochs={args.vae_epochs}")),
                    "autoencoder": train_generative(spark, config_for("generative.model=autoencoder",
                                                                      "generative.epochs=1"))}
            for kind, run in runs.items():
                figures[f"{kind}_images_per_s"] = sum(h["images_per_s"] for h in run.history) / len(run.history)
                figures[f"{kind}_seconds"] = run.seconds
            cdcgan = runs["cdcgan"].metrics
            figures.update(cdcgan_conditional_accuracy=cdcgan["conditional_accuracy"], cdcgan_fcd=cdcgan["fcd"],
                           fcd_train_test=cdcgan["fcd_train_test"], fcd_samples=cdcgan["fcd_samples"],
                           dcgan_fcd=runs["dcgan"].metrics["fcd"], vae_test_mse=runs["vae"].metrics["test_mse"],
                           vae_test_ssim=runs["vae"].metrics["test_ssim"],
                           autoencoder_test_mse=runs["autoencoder"].metrics["test_mse"])
            figures.update(low_label_experiment(spark, config_for, low_label, test_only))
        artifacts = {kind: f"runs:/{run.run_id}/samples" for kind, run in runs.items()}
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.tar.gz"))
        result = {"images": args.limit or 70000, "gan_epochs": args.gan_epochs, "vae_epochs": args.vae_epochs,
                  **{k: round(v, 4) for k, v in figures.items()}, "sample_grids": artifacts}
        print(f"cDCGAN: conditional accuracy {figures['cdcgan_conditional_accuracy']:.4f} (target >= 0.95), "
              f"FCD {figures['cdcgan_fcd']:.3f} vs FCD(train, test) {figures['fcd_train_test']:.3f} "
              f"= {figures['cdcgan_fcd'] / max(figures['fcd_train_test'], 1e-9):.1f}x the real-vs-real floor")
        print(f"VAE: test reconstruction MSE {figures['vae_test_mse']:.5f} (pixels in [0, 1]), "
              f"SSIM {figures['vae_test_ssim']:.3f}")
        print("training images/s (2 ranks): " + ", ".join(
            f"{kind} {figures[f'{kind}_images_per_s']:.0f}" for kind in runs))
        print(f"1% labels ({figures['low_label_train_images']:.0f} real training images): test accuracy "
              f"{figures['low_label_real_only_accuracy']:.4f} real only vs "
              f"{figures['low_label_with_synthetic_accuracy']:.4f} with synthetic "
              f"({figures['low_label_synthetic_images']:.0f} generated images, half of each batch)")
        print(json.dumps(result))
    return 0


def low_label_experiment(spark, config_for, low_label: Path, test_only: Path) -> dict[str, float]:
    """A dataset of 1% of the training images (plus the full test split); classifiers without and with
    cDCGAN-generated images mixed in."""
    dataset = ["train.dataset=mnist-low", "ingest.dataset=mnist-low", "train.registered_model=bench-low-label",
               "train.model=lenet", "train.batch_size=32", "train.epochs=30", "train.early_stopping_patience=8",
               "train.augment.flip=false"]
    ingest(spark, config_for(*dataset, f"ingest.source.uri={low_label}"))
    summary = ingest(spark, config_for(*dataset, f"ingest.source.uri={test_only}"))
    real_only = train_classifier(spark, config_for(*dataset))
    generated = generate_synthetic(spark, config_for(*dataset, "synthetic.model=visionlake-cdcgan@champion",
                                                     "synthetic.per_class=600"))
    mixed = train_classifier(spark, config_for(*dataset, "train.synthetic_fraction=0.5"))
    return {"low_label_train_images": summary.total.get("train", 0),
            "low_label_real_only_accuracy": real_only.test_accuracy,
            "low_label_with_synthetic_accuracy": mixed.test_accuracy,
            "low_label_synthetic_images": sum(generated.counts.values())}


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"# total {time.perf_counter() - started:.0f}s", file=sys.stderr)
    sys.exit(code)
