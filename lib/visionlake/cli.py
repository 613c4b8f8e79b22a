"""visionlake: ingest images into a lake, train with Horovod on Spark, track in MLflow, score in batch.

Examples:
    visionlake demo                                   # demo data -> ingest -> classifier -> anomaly -> GAN -> score
    visionlake ingest --conf conf/mnist.yaml ingest.source.uri=/data/mnist
    visionlake ingest ingest.full_rebuild=true        # rebuild the demo dataset from scratch
    visionlake train classifier --dataset mnist --conf conf/mnist.yaml
    visionlake train gan --model cdcgan --dataset mnist --conf conf/mnist.yaml generative.epochs=10
    visionlake train vae --dataset mnist --conf conf/mnist.yaml
    visionlake generate --model visionlake-cdcgan@champion --per-class 1000 --dataset mnist --conf conf/mnist.yaml
    visionlake train anomaly --method autoencoder --dataset mnist --conf conf/mnist.yaml anomaly.normal_labels=[zero]
    visionlake score --dataset mnist --conf conf/mnist.yaml      # champion classifier + champion anomaly model
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import visionlake
from visionlake.config import Config, ConfigError, check_reachable_from_executors, load_config

log = logging.getLogger("visionlake")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

_EXAMPLES = {
    "ingest": "visionlake ingest --conf conf/mnist.yaml ingest.source.uri=/data/mnist_png",
    "demo-data": "visionlake demo-data demo.images_per_class=100",
    "demo": "visionlake demo                       # or quicker: visionlake demo demo.generative_epochs=5",
    "show-config": "visionlake show-config --conf conf/mnist.yaml lake.root=/tmp/lake",
    "train": "visionlake train classifier --dataset mnist train.model=resnet_small train.epochs=8\n"
             "  visionlake train gan --model cdcgan --dataset mnist generative.epochs=10\n"
             "  visionlake train vae --dataset mnist generative.autoencoder.latent_dim=16\n"
             "  visionlake train anomaly --method autoencoder --dataset mnist anomaly.normal_labels=[zero]",
    "generate": "visionlake generate --model visionlake-cdcgan@champion --per-class 1000 --dataset mnist",
    "score": "visionlake score --dataset mnist --conf conf/mnist.yaml score.anomaly_model=visionlake-anomaly@champion"
             "\n  visionlake score --dataset demo score.raw_uri=/data/new-drop   # ingest the drop, then score it",
}

# Command-line flags that are shorthands for config keys (flag -> key), shared by the CLI and jobs/*.py.
FLAG_KEYS = {"dataset": "train.dataset", "model": None, "per_class": "synthetic.per_class",
             "method": "anomaly.method", "raw": "score.raw_uri"}


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """``--dataset mnist`` etc. as ``key=value`` overrides, placed before the explicit ones so those win."""
    overrides = []
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "model":  # `train gan --model cdcgan` picks the architecture; `generate --model` the generator
            key = "synthetic.model" if args.command == "generate" else "generative.model"
        if flag == "dataset" and args.command == "score":
            key = "score.dataset"
        overrides.append(f"{key}={value}")
    kind = getattr(args, "kind", None)
    if kind in ("vae", "autoencoder"):
        overrides.append(f"generative.model={kind}")
    return overrides


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", metavar="FILE", help="YAML config (default: the embedded conf/local.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help="config overrides, e.g. ingest.dataset=mnist lake.root=/data/lake")


def parse_command_line(parser: argparse.ArgumentParser, argv: Optional[list[str]]) -> argparse.Namespace:
    """Like ``parse_args``, but ``key.path=value`` overrides may also follow flags: argparse fills a positional list
    only once, so ``train gan --model cdcgan generative.epochs=3`` would otherwise reject the override."""
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*getattr(args, "overrides", []), *extra]
    return args


class _Py4JReconnectFilter(logging.Filter):
    """Horovod's driver forks helper processes that inherit the py4j socket; when one exits, py4j logs the reset
    with a traceback through the root logger and then reconnects on its own. The record is noise, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Exception while sending command."


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Py4JReconnectFilter())
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up banners, before it is imported


def _user_errors() -> tuple[type, ...]:
    from visionlake.ingest import IngestError
    from visionlake.lake import LakeError
    from visionlake.sources import SourceError
    from visionlake.storage import StorageError
    from visionlake.tracking import TrackingError
    # TrainingError is not here: a failed rank deserves its traceback (exit 1).
    return ConfigError, SourceError, IngestError, LakeError, StorageError, TrackingError


def run_job(job: Callable, description: str, argv: Optional[list[str]] = None, command: str = "",
            add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> int:
    """Parses ``--conf``, flags and overrides, opens the Spark session, runs ``job(spark, config)``, returns an exit
    code.

    Errors in the input or configuration print one actionable line and exit 2; anything else exits 1 with the
    traceback. The session is stopped either way.
    """
    parser = argparse.ArgumentParser(description=description)
    if add_arguments:
        add_arguments(parser)
    add_config_arguments(parser)
    args = parse_command_line(parser, argv)
    args.command = command
    args.overrides = [*flag_overrides(args), *args.overrides]
    return _run(job, args)


def _run(job: Callable, args: argparse.Namespace) -> int:
    from visionlake.spark import spark_session

    configure_logging()
    try:
        config = load_config(args.conf, args.overrides)
        log.info("visionlake %s from %s", visionlake.__version__, Path(visionlake.__file__).parent)
        log.info("config: %s", json.dumps(config.to_dict(), default=str))
        with spark_session(config.spark) as spark:
            spark.sparkContext.setLogLevel("WARN")
            check_reachable_from_executors(config, spark.sparkContext.master)
            job(spark, config)
    except _user_errors() as error:
        log.error("%s", error)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 - the job boundary: report and turn into an exit status
        log.exception("job failed")
        return EXIT_FAILED
    return EXIT_OK


def ingest_job(spark, config: Config) -> None:
    from visionlake.ingest import ingest

    ingest(spark, config)  # logs its summary


def train_classifier_job(spark, config: Config) -> None:
    from visionlake.train import train_classifier

    summary = train_classifier(spark, config)
    print(f"MLflow run {summary.run_id}; model {summary.model_name} version {summary.model_version} "
          f"({summary.gate['gate.decision']}). Browse it: mlflow ui --backend-store-uri "
          f"{config.tracking.tracking_uri} --host 127.0.0.1")


def train_generative_job(spark, config: Config) -> None:
    from visionlake.generative import train_generative

    summary = train_generative(spark, config)
    print(f"MLflow run {summary.run_id}; model {summary.model_name} version {summary.model_version} "
          f"({summary.gate['gate.decision']}); sample grids under the run's samples/ artifacts")


def train_anomaly_job(spark, config: Config) -> None:
    from visionlake.detectors import train_detector

    summary = train_detector(spark, config)
    print(f"MLflow run {summary.run_id}; anomaly model {summary.model_name} version {summary.model_version} "
          f"({summary.gate['gate.decision']}), threshold {summary.calibration.threshold:.6g}")


def score_job(spark, config: Config) -> None:
    from visionlake.score import score_dataset

    print(score_dataset(spark, config).report())


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="lake dataset to score (sets score.dataset)")
    parser.add_argument("--raw", help="a raw drop to ingest into the dataset first (sets score.raw_uri)")


def generate_job(spark, config: Config) -> None:
    from visionlake.synthetic import generate_synthetic

    print(generate_synthetic(spark, config).report())


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="lake dataset to train on (sets train.dataset)")
    parser.add_argument("--model", choices=["dcgan", "cdcgan"], help="GAN architecture (sets generative.model)")
    parser.add_argument("--method", choices=["autoencoder", "vae", "gan", "classifier"],
                        help="anomaly detector (sets anomaly.method)")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="lake dataset to write the synthetic table of (sets train.dataset)")
    parser.add_argument("--model", help="registered generator: name, name@alias, name/version or models:/ URI "
                                        "(sets synthetic.model)")
    parser.add_argument("--per-class", dest="per_class", type=int, help="images per class (sets synthetic.per_class)")


def demo_data_job(config: Config) -> Path:
    from visionlake.demo import write_demo_source

    return write_demo_source(config)


def demo_job(spark, config: Config) -> None:
    from visionlake.pipeline import run_demo

    print(run_demo(spark, config).report())


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="visionlake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {"ingest": "ingest raw images into the lake (Parquet + TFRecord + quarantine)",
             "demo-data": "write the embedded demo raw dataset to ingest.source.uri",
             "demo": "generate the demo data and run the whole pipeline on it (ingest, classifier, anomaly model, "
                     "GAN, scoring)",
             "show-config": "print the resolved configuration",
             "train": "train a model with Horovod on Spark, track it in MLflow, register and gate it",
             "generate": "write labelled synthetic images from a registered conditional generator to the lake",
             "score": "classify and anomaly-score a lake table (or a raw drop) into the predictions table"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=f"{text}.\n\nExample:\n  {_EXAMPLES[name]}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "train":
            sub.add_argument("kind", choices=list(TRAINERS), help="what to train")
            add_train_arguments(sub)
        elif name == "generate":
            add_generate_arguments(sub)
        elif name == "score":
            add_score_arguments(sub)
        add_config_arguments(sub)
    args = parse_command_line(parser, argv)
    args.overrides = [*flag_overrides(args), *args.overrides]
    if args.command in ("show-config", "demo-data"):
        configure_logging()
        try:
            config = load_config(args.conf, args.overrides)
        except ConfigError as error:
            log.error("%s", error)
            return EXIT_BAD_INPUT
        if args.command == "show-config":
            print(json.dumps(config.to_dict(), indent=2, default=str))
        else:
            demo_data_job(config)
        return EXIT_OK
    if args.command == "train":
        return _run(TRAINERS[args.kind], args)
    jobs = {"ingest": ingest_job, "demo": demo_job, "generate": generate_job, "score": score_job}
    return _run(jobs[args.command], args)


TRAINERS = {"classifier": train_classifier_job, "gan": train_generative_job, "vae": train_generative_job,
            "autoencoder": train_generative_job, "anomaly": train_anomaly_job}


if __name__ == "__main__":
    sys.exit(main())
