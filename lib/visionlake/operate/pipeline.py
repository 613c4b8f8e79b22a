"""The whole pipeline in one process, as ``visionlake demo`` runs it: demo data -> ingest -> classifier -> anomaly
model -> conditional GAN (short schedule) -> batch scoring, then a summary of what is now in the lake and registry.

Each step is the same library call its ``jobs/*.py`` entry point makes; only the schedule is shortened for the demo
(``demo.*`` in the config).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pyspark.sql import SparkSession

from visionlake.config import Config

log = logging.getLogger(__name__)

SUMMARY_TABLES = ("images", "quarantine", "predictions", "synthetic")


@dataclass
class DemoSummary:
    dataset: str
    lake_root: str
    tracking_uri: str
    tables: dict[str, int]
    models: dict[str, dict[str, str]]  # registered model -> alias -> version
    anomaly_rate: float
    per_label_anomaly_rate: dict[str, float]
    step_seconds: dict[str, float] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  # how well the models work, against the demo's targets
    report_path: str = ""

    @property
    def seconds(self) -> float:
        return sum(self.step_seconds.values())

    def report(self) -> str:
        steps = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in self.step_seconds.items())
        lines = [f"visionlake demo finished in {self.seconds:.0f}s ({steps})",
                 f"lake {self.lake_root}, dataset {self.dataset!r}:"]
        lines += [f"  {table:<12} {count:>6} rows" for table, count in self.tables.items()]
        lines.append(f"registered models ({self.tracking_uri}):")
        for name, aliases in sorted(self.models.items()):
            shown = ", ".join(f"@{alias} = v{version}" for alias, version in sorted(aliases.items())) or "no alias"
            lines.append(f"  {name:<24} {shown}")
        rates = ", ".join(f"{label} {rate:.0%}" for label, rate in sorted(self.per_label_anomaly_rate.items()))
        lines += [f"anomaly rate {self.anomaly_rate:.1%} (per predicted label: {rates})"]
        if self.figures:
            lines.append("models:")
            lines += [f"  {name:<34} {value}" for name, value in self.figures.items()]
        if self.report_path:
            lines.append(f"report: {self.report_path}   # open it in a browser: pictures of all of the above")
        lines += ["next:",
                  "  make mlflow-ui                  # runs, sample grids, confusion matrices, models: "
                  "http://127.0.0.1:5000",
                  "  .venv/bin/jupyter lab notebooks/  # 01_explore_lake, 02_models, 03_anomalies "
                  "(or: make notebooks)"]
        return "\n".join(lines)


def demo_settings(config: Config) -> tuple[Config, Config]:
    """The configs of the demo's anomaly model and of its conditional GAN: the short generative schedules, the
    GAN's ranks and batch, and the choice of normal classes."""
    demo = config.demo
    generative = replace(config.generative, epochs=demo.anomaly_epochs, batch_size=demo.generative_batch_size,
                         quality=replace(config.generative.quality, samples=demo.quality_samples,
                                         every_epochs=demo.quality_every_epochs))
    anomaly = replace(config.anomaly, normal_labels=list(demo.normal_labels))
    config = replace(config, generative=generative, anomaly=anomaly)
    return config, replace(config, train=replace(config.train, num_proc=demo.gan_ranks),
                           generative=replace(generative, model="cdcgan", epochs=demo.gan_epochs,
                                              batch_size=demo.gan_batch_size))


def run_demo(spark: SparkSession, config: Config) -> DemoSummary:
    """Runs every step on the embedded demo data; re-running adds model versions but no duplicate lake rows."""
    from visionlake.operate.demo_data import write_demo_source
    from visionlake.train.detectors import train_detector
    from visionlake.train.generative import train_generative
    from visionlake.ingest.job import ingest
    from visionlake.score.job import score_dataset
    from visionlake.train.classifier import train_classifier

    config, gan_config = demo_settings(config)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("demo data", lambda: write_demo_source(config)),
        ("ingest", lambda: ingest(spark, config)),
        ("classifier", lambda: train_classifier(spark, config)),
        ("anomaly model", lambda: train_detector(spark, config)),
        ("conditional GAN", lambda: train_generative(spark, gan_config)),
        ("scoring", lambda: score_dataset(spark, config)),
    ]
    seconds: dict[str, float] = {}
    results: dict[str, Any] = {}
    for number, (name, step) in enumerate(steps, start=1):
        log.info("demo step %d/%d: %s", number, len(steps), name)
        started = time.perf_counter()
        results[name] = step()  # each step logs its own summary
        seconds[name] = time.perf_counter() - started
    scored = results["scoring"]
    figures = demo_figures(results["classifier"], results["anomaly model"], results["conditional GAN"])
    report = write_demo_report(spark, config, figures, results)
    return DemoSummary(dataset=config.score.dataset, lake_root=config.lake.root,
                       tracking_uri=config.tracking.tracking_uri, tables=table_counts(spark, config),
                       models=registered_aliases(config), anomaly_rate=scored.anomaly_rate,
                       per_label_anomaly_rate=scored.per_label_anomaly_rate, step_seconds=seconds,
                       figures=figures, report_path=str(report))


def demo_figures(classifier, detector, generator) -> dict[str, str]:
    """The figures that say whether the demo's models work, each with the demo's target."""
    metrics = generator.metrics
    fcd, floor = metrics.get("fcd"), metrics.get("fcd_train_test")
    auroc = "n/a" if detector.val_auroc is None else f"{detector.val_auroc:.3f}"
    figures = {"classifier test accuracy": f"{classifier.test_accuracy:.3f} (target >= 0.95)",
               "anomaly detector val AUROC": f"{auroc} (target >= 0.95)",
               "conditional GAN conditional accuracy": f"{metrics.get('conditional_accuracy', float('nan')):.3f} "
                                                       f"on {metrics.get('conditional_accuracy_samples', 0):.0f} "
                                                       "generated images (target >= 0.8)"}
    if fcd is not None and floor:
        kept = f", generator of epoch {metrics['selected_epoch']:.0f}" if "selected_epoch" in metrics else ""
        figures["conditional GAN FCD"] = (f"{fcd:.2f} = {fcd / floor:.2f}x the train-vs-test floor {floor:.2f}, "
                                          f"means of {metrics.get('fcd_draws', 1):.0f} draws of "
                                          f"{metrics.get('fcd_samples', 0):.0f} images{kept} (target <= 2x)")
    return figures


def write_demo_report(spark: SparkSession, config: Config, figures: dict[str, str], results: dict[str, Any]):
    """Writes ``demo.report``, the HTML report of this demo run; returns its path."""
    from pathlib import Path

    from visionlake.operate.report import collect_report, render_html

    detector = results["anomaly model"]
    inputs = collect_report(spark, config, figures, classifier_run=results["classifier"].run_id,
                            generator_run=results["conditional GAN"].run_id, scoring=results["scoring"],
                            threshold=detector.calibration.threshold)
    path = Path(config.demo.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(inputs), encoding="utf-8")
    log.info("demo report: %s", path)
    return path


def table_counts(spark: SparkSession, config: Config) -> dict[str, int]:
    """Live rows per table of the scored dataset (0 for a table it does not have yet)."""
    from visionlake.lake.store import Lake

    lake = Lake(spark, config.lake.root)
    manifest = lake.require_manifest(config.score.dataset)
    return {table: lake.read_table(config.score.dataset, table, manifest).count() for table in SUMMARY_TABLES}


def registered_aliases(config: Config) -> dict[str, dict[str, str]]:
    """Every registered model in the store with its aliases (alias -> version)."""
    from mlflow.tracking import MlflowClient

    from visionlake import tracking

    tracking.connect(config.tracking)
    return {model.name: {alias: str(version) for alias, version in model.aliases.items()}
            for model in MlflowClient().search_registered_models()}
