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
    visionlake vacuum --dataset mnist --conf conf/mnist.yaml --dry-run   # what vacuum would remove
    visionlake optimize --dataset mnist --conf conf/mnist.yaml  # compact the small files of incremental runs
    visionlake history --dataset demo                 # every version of the dataset's Delta tables
    visionlake jars                                   # Delta Lake's jars, for spark-submit --jars
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import visionlake
from visionlake.console import configure_logging
from visionlake.config import (Config, ConfigError, check_reachable_from_executors, config_summary,
                               load_config, resolve_config)

log = logging.getLogger("visionlake")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

_EXAMPLES = {
    "ingest": "visionlake ingest --conf conf/mnist.yaml ingest.source.uri=/data/mnist_png",
    "demo-data": "visionlake demo-data demo.images_per_class=100",
    "demo": "visionlake demo                       # or quicker: visionlake demo demo.gan_epochs=10",
    "show-config": "visionlake show-config --conf conf/mnist.yaml lake.root=/tmp/lake",
    "train": "visionlake train classifier --dataset mnist train.model=resnet_small train.epochs=8\n"
             "  visionlake train gan --model cdcgan --dataset mnist generative.epochs=10\n"
             "  visionlake train vae --dataset mnist generative.autoencoder.latent_dim=16\n"
             "  visionlake train anomaly --method autoencoder --dataset mnist anomaly.normal_labels=[zero]",
    "train classifier": "visionlake train classifier --dataset mnist train.model=resnet_small train.epochs=8",
    "train gan": "visionlake train gan --model cdcgan --dataset mnist generative.epochs=10",
    "train vae": "visionlake train vae --dataset mnist generative.autoencoder.latent_dim=16",
    "train autoencoder": "visionlake train autoencoder --kind vae --dataset mnist generative.epochs=10",
    "train anomaly": "visionlake train anomaly --method autoencoder --dataset mnist anomaly.normal_labels=[zero]",
    "generate": "visionlake generate --model visionlake-cdcgan@champion --per-class 1000 --dataset mnist",
    "score": "visionlake score --dataset mnist --conf conf/mnist.yaml score.anomaly_model=visionlake-anomaly@champion"
             "\n  visionlake score --dataset demo --raw /data/new-drop   # ingest the drop, then score it",
    "vacuum": "visionlake vacuum --dataset mnist --conf conf/mnist.yaml --dry-run"
              "\n  visionlake vacuum --dataset demo --retention-hours 24",
    "optimize": "visionlake optimize --dataset mnist --conf conf/mnist.yaml",
    "history": "visionlake history --dataset demo",
    "jars": "visionlake jars --fetch                # once, with network (make setup does it)"
            "\n  visionlake jars                        # then: spark-submit --jars \"$(visionlake jars)\" ...",
}


@dataclass(frozen=True)
class Flag:
    """A command-line flag that is a shorthand for one config key."""
    option: str
    key: str
    help: str
    choices: tuple[str, ...] = ()
    type: Callable[[str], object] = str
    default: Optional[str] = None

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        default = f"; default {self.default}" if self.default is not None else ""
        parser.add_argument(self.option, dest=self.dest, type=self.type, choices=self.choices or None,
                            default=self.default, help=f"{self.help} (sets {self.key}{default})")


_TRAIN_DATASET = Flag("--dataset", "train.dataset", "lake dataset to train on")

# The flags of each command, declared once: `visionlake <command>` and its jobs/*.py entry point (JOB_COMMANDS) both
# build their parsers from here, so they take the same flags with the same meaning and the same help.
COMMAND_FLAGS: dict[str, tuple[Flag, ...]] = {
    "ingest": (Flag("--dataset", "ingest.dataset", "lake dataset to ingest into"),),
    "train classifier": (_TRAIN_DATASET,),
    "train gan": (_TRAIN_DATASET, Flag("--model", "generative.model", "GAN architecture", ("dcgan", "cdcgan"))),
    "train vae": (_TRAIN_DATASET,),
    "train autoencoder": (_TRAIN_DATASET, Flag("--kind", "generative.model", "plain autoencoder or VAE",
                                               ("autoencoder", "vae"), default="autoencoder")),
    "train anomaly": (_TRAIN_DATASET, Flag("--method", "anomaly.method", "anomaly detector",
                                           ("autoencoder", "vae", "gan", "classifier"))),
    "generate": (Flag("--dataset", "train.dataset", "lake dataset whose synthetic table receives the images"),
                 Flag("--model", "synthetic.model", "registered generator: name, name@alias, name/version or "
                                                    "models:/ URI"),
                 Flag("--per-class", "synthetic.per_class", "images per class", type=int)),
    "score": (Flag("--dataset", "score.dataset", "lake dataset to score"),
              Flag("--raw", "score.raw_uri", "a raw drop to ingest into the dataset first")),
    "optimize": (Flag("--dataset", "ingest.dataset", "lake dataset whose tables to compact"),),
    "history": (Flag("--dataset", "ingest.dataset", "lake dataset whose versions to list"),),
    "vacuum": (Flag("--dataset", "ingest.dataset", "lake dataset to vacuum"),
               Flag("--retention-hours", "lake.retention_hours", "remove files superseded more than this many "
                    "hours ago (0: all of them; readers of older versions then fail)", type=float)),
}
# Switches of a command that are no config key: passed to its job function as keyword arguments.
COMMAND_SWITCHES: dict[str, tuple[tuple[str, str], ...]] = {
    "vacuum": (("--dry-run", "list what would be removed, and remove nothing"),),
    "jars": (("--fetch", "resolve them from Maven Central first (Spark's Ivy), unless they are installed"),),
}
# Settings a command implies: `train vae` is `train autoencoder --kind vae`.
COMMAND_SETTINGS = {"train vae": ("generative.model=vae",)}
# jobs/<name>.py -> the `visionlake` command it runs (same flags, same overrides, same job function).
JOB_COMMANDS = {"ingest": "ingest", "train_classifier": "train classifier", "train_gan": "train gan",
                "train_autoencoder": "train autoencoder", "train_anomaly": "train anomaly",
                "generate_synthetic": "generate", "batch_inference": "score", "vacuum": "vacuum",
                "optimize": "optimize"}


def flag_overrides(command: str, args: argparse.Namespace) -> list[str]:
    """``--dataset mnist`` etc. as ``key=value`` overrides, placed before the explicit ones so those win.

    Args:
        command: the command, e.g. ``train gan`` (a key of ``COMMAND_FLAGS``).
        args: the parsed command line.
    """
    overrides = list(COMMAND_SETTINGS.get(command, ()))
    for flag in COMMAND_FLAGS.get(command, ()):
        value = getattr(args, flag.dest, None)
        if value is not None:
            overrides.append(f"{flag.key}={value}")
    return overrides


def add_command_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """The command's flags (``COMMAND_FLAGS``) and switches, then ``--conf`` and the ``key.path=value`` overrides."""
    for flag in COMMAND_FLAGS.get(command, ()):
        flag.add_to(parser)
    for option, text in COMMAND_SWITCHES.get(command, ()):
        parser.add_argument(option, action="store_true", help=text)
    add_config_arguments(parser)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", metavar="FILE", action="append",
                        help="YAML config layered over the embedded defaults (conf/local.yaml); repeat to layer "
                             "several files, later ones win")
    parser.add_argument("--verbose", action="store_true",
                        help="other libraries' log lines on the console too, not only in log.file")
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


def _user_errors() -> tuple[type, ...]:
    from visionlake.ingest.job import IngestError
    from visionlake.lake.store import LakeError
    from visionlake.ingest.sources import SourceError
    from visionlake.lake.filesystem import StorageError
    from visionlake.tracking import TrackingError
    from visionlake.spark import SparkSetupError
    # TrainingError is not here: a failed rank deserves its traceback (exit 1).
    return ConfigError, SourceError, IngestError, LakeError, StorageError, TrackingError, SparkSetupError


def job_parser(job: str) -> argparse.ArgumentParser:
    """The parser of ``jobs/<job>.py``: its command's description, flags, ``--conf`` and overrides."""
    if job not in JOB_COMMANDS:
        raise ValueError(f"no job {job!r}: add jobs/{job}.py's command to visionlake.operate.cli.JOB_COMMANDS")
    command = JOB_COMMANDS[job]
    parser = argparse.ArgumentParser(
        prog=f"jobs/{job}.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{_description(command)}\n\nThe spark-submit form of `visionlake {command}`: the same flags "
                    "and overrides.")
    add_command_arguments(parser, command)
    return parser


def parse_arguments(argv: Optional[list[str]] = None, job: Optional[str] = None) -> argparse.Namespace:
    """Parses a ``visionlake`` command line, or ``jobs/<job>.py``'s, exactly as the command does before it runs.

    Args:
        argv: the arguments after the program name (None: ``sys.argv[1:]``).
        job: the ``jobs/*.py`` entry point's name (e.g. ``train_gan``); None for the ``visionlake`` CLI.

    Returns:
        The namespace with ``command`` (e.g. ``train gan``), ``conf`` and ``overrides``: the flags as config
        overrides, then the explicit ones (which win). ``load_config(args.conf, args.overrides)`` is the config the
        command runs with.

    Raises:
        SystemExit: from argparse, for ``--help`` (status 0) or an unknown flag (status 2).
    """
    args = parse_command_line(job_parser(job) if job else build_parser(), argv)
    if job:
        args.command = JOB_COMMANDS[job]
    elif args.command == "train":
        args.command = f"train {args.trainer}"
    verbose = ["log.verbose=true"] if getattr(args, "verbose", False) else []
    args.overrides = [*flag_overrides(args.command, args), *verbose, *args.overrides]
    return args


def run_job(job: str, argv: Optional[list[str]] = None) -> int:
    """Runs ``jobs/<job>.py``: parses its flags, ``--conf`` and overrides as ``visionlake <its command>`` does, opens
    the Spark session, runs the command's job function, returns an exit code.

    Errors in the input or configuration print one actionable line and exit 2; anything else exits 1 with the
    traceback. The session is stopped either way.
    """
    args = parse_arguments(argv, job)
    return _run(_COMMAND_JOBS[args.command], args)


def _switches(args: argparse.Namespace) -> dict[str, bool]:
    """The command's ``COMMAND_SWITCHES`` as keyword arguments of its job function (``--dry-run`` -> dry_run)."""
    names = [option.lstrip("-").replace("-", "_") for option, _ in COMMAND_SWITCHES.get(args.command, ())]
    return {name: getattr(args, name) for name in names}


def _run(job: Callable, args: argparse.Namespace) -> int:
    from visionlake.spark import spark_session

    configure_logging()
    config: Optional[Config] = None
    try:
        config = load_config(args.conf, args.overrides)
        configure_logging(config.log.file, config.log.verbose)
        log.info("visionlake %s from %s", visionlake.__version__, Path(visionlake.__file__).parent)
        for line in config_summary(config):
            log.info("%s", line)
        with spark_session(config.spark, jvm_log=None if config.log.verbose else config.log.file) as spark:
            spark.sparkContext.setLogLevel("WARN")
            check_reachable_from_executors(config, spark.sparkContext.master)
            job(spark, config, **_switches(args))
    except _user_errors() as error:
        log.error("%s", error)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001 - the job boundary: report and turn into an exit status
        log.exception("job failed")
        return EXIT_FAILED
    finally:
        if config is not None and not config.log.verbose:
            log.info("other libraries' output (Spark, MLflow, TensorFlow, Horovod ranks): %s", config.log.file)
    return EXIT_OK


def ingest_job(spark, config: Config) -> None:
    from visionlake.ingest.job import ingest

    ingest(spark, config)  # logs its summary


def train_classifier_job(spark, config: Config) -> None:
    from visionlake.train.classifier import train_classifier

    summary = train_classifier(spark, config)
    print(f"MLflow run {summary.run_id}; model {summary.model_name} version {summary.model_version} "
          f"({summary.gate['gate.decision']}). Browse it: mlflow ui --backend-store-uri "
          f"{config.tracking.tracking_uri} --host 127.0.0.1")


def train_generative_job(spark, config: Config) -> None:
    from visionlake.train.generative import train_generative

    summary = train_generative(spark, config)
    print(f"MLflow run {summary.run_id}; model {summary.model_name} version {summary.model_version} "
          f"({summary.gate['gate.decision']}); sample grids under the run's samples/ artifacts")


def train_anomaly_job(spark, config: Config) -> None:
    from visionlake.train.detectors import train_detector

    summary = train_detector(spark, config)
    print(f"MLflow run {summary.run_id}; anomaly model {summary.model_name} version {summary.model_version} "
          f"({summary.gate['gate.decision']}), threshold {summary.calibration.threshold:.6g}")


def score_job(spark, config: Config) -> None:
    from visionlake.score.job import score_dataset

    print(score_dataset(spark, config).report())


def generate_job(spark, config: Config) -> None:
    from visionlake.score.synthetic import generate_synthetic

    print(generate_synthetic(spark, config).report())


def vacuum_job(spark, config: Config, dry_run: bool = False) -> None:
    from visionlake.lake.store import Lake

    hours = config.lake.retention_hours
    if hours < 1:
        log.warning("lake.retention_hours=%g: readers and training runs still on a superseded version of %r will "
                    "fail once its files are removed", hours, config.ingest.dataset)
    lake = Lake(spark, config.lake.root, commit_lock=config.lake.commit_lock)
    print(lake.vacuum(config.ingest.dataset, hours, dry_run=dry_run).report())


def optimize_job(spark, config: Config) -> None:
    from visionlake.lake.store import Lake

    lake = Lake(spark, config.lake.root, commit_lock=config.lake.commit_lock, settings=config.lake)
    print(lake.optimize(config.ingest.dataset).report())


def history_job(spark, config: Config) -> None:
    from visionlake.lake.store import Lake, history_report

    print(history_report(config.ingest.dataset, Lake(spark, config.lake.root).history(config.ingest.dataset)))


def demo_data_job(config: Config) -> Path:
    from visionlake.operate.demo_data import write_demo_source

    return write_demo_source(config)


def demo_job(spark, config: Config) -> None:
    from visionlake.operate.pipeline import run_demo

    print(run_demo(spark, config).report())


_HELPS = {"ingest": "ingest raw images into the lake (Parquet + TFRecord + quarantine)",
          "demo-data": "write the embedded demo raw dataset to ingest.source.uri",
          "demo": "generate the demo data and run the whole pipeline on it (ingest, classifier, anomaly model, "
                  "GAN, scoring)",
          "show-config": "print the resolved configuration",
          "train": "train a model with Horovod on Spark, track it in MLflow, register and gate it",
          "generate": "write labelled synthetic images from a registered conditional generator to the lake",
          "score": "classify and anomaly-score a lake table (or a raw drop) into the predictions table",
          "vacuum": "remove a dataset's files that newer versions superseded longer ago than lake.retention_hours "
                    "(Delta VACUUM of each table), and TFRecord shards no version lists",
          "optimize": "compact a dataset's small files (Delta OPTIMIZE of each table, in lake.row_group_bytes "
                      "row groups); readers of older versions keep theirs until vacuum",
          "history": "list every version of a dataset's tables: operation, job, run and rows",
          "jars": "print Delta Lake's jars as this environment gives them to Spark (comma-separated, for "
                  "spark-submit --jars)"}
_TRAIN_HELPS = {"classifier": "train an image classifier (LeNet or a small ResNet)",
                "gan": "train a DCGAN or a conditional DCGAN; FCD and sample grids in MLflow",
                "vae": "train a convolutional VAE (the same as: train autoencoder --kind vae)",
                "autoencoder": "train a convolutional autoencoder, or a VAE with --kind vae",
                "anomaly": "train, calibrate and register an anomaly detector on normal images"}


def _description(command: str) -> str:
    """A command's help text and its example."""
    _, _, kind = command.partition(" ")
    text = f"{_TRAIN_HELPS[kind]} (Horovod on Spark; tracked, registered and gated in MLflow)" if kind \
        else _HELPS[command]
    return f"{text}.\n\nExample:\n  {_EXAMPLES[command]}"


def build_parser() -> argparse.ArgumentParser:
    """The ``visionlake`` parser: one subcommand per command, ``train`` with one per trainer."""
    parser = argparse.ArgumentParser(prog="visionlake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in _HELPS.items():
        sub = commands.add_parser(name, help=text, description=_description(name),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "train":
            kinds = sub.add_subparsers(dest="trainer", required=True, metavar="{" + ",".join(TRAINERS) + "}",
                                       help="what to train")
            for kind in TRAINERS:
                add_command_arguments(kinds.add_parser(kind, help=_TRAIN_HELPS[kind],
                                                       description=_description(f"train {kind}"),
                                                       formatter_class=argparse.RawDescriptionHelpFormatter),
                                      f"train {kind}")
        else:
            add_command_arguments(sub, name)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.command == "jars":
        return jars_command(args)
    if args.command in ("show-config", "demo-data"):
        configure_logging()
        try:
            resolved = resolve_config(args.conf, args.overrides)
        except ConfigError as error:
            log.error("%s", error)
            return EXIT_BAD_INPUT
        if args.command == "show-config":
            print(resolved.describe())
        else:
            demo_data_job(resolved.config)
        return EXIT_OK
    return _run(_COMMAND_JOBS[args.command], args)


def jars_command(args: argparse.Namespace) -> int:
    """``visionlake jars``: the installed Delta Lake jars, comma-separated; ``--fetch`` resolves them first (Ivy's
    output goes to ``log.file``, or to the console with ``--verbose``)."""
    from visionlake.spark import SparkSetupError, fetch_jars, installed_jars

    configure_logging()
    try:
        config = load_config(args.conf, args.overrides)
        if args.fetch:
            log.info("resolving Delta Lake's jars from Maven Central (once per environment)")
        jars = fetch_jars(log_file=None if config.log.verbose else config.log.file) if args.fetch \
            else installed_jars(required=True)
    except (ConfigError, SparkSetupError) as error:
        log.error("%s", error)
        return EXIT_BAD_INPUT
    print(",".join(jars))
    return EXIT_OK


TRAINERS = {"classifier": train_classifier_job, "gan": train_generative_job, "vae": train_generative_job,
            "autoencoder": train_generative_job, "anomaly": train_anomaly_job}
# The job function of every command that runs on a Spark session.
_COMMAND_JOBS = {"ingest": ingest_job, "demo": demo_job, "generate": generate_job, "score": score_job,
                 "vacuum": vacuum_job, "optimize": optimize_job, "history": history_job,
                 **{f"train {kind}": job for kind, job in TRAINERS.items()}}


if __name__ == "__main__":
    sys.exit(main())
