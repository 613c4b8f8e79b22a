"""The demo pipeline's settings and summary, and the notebook helpers, without Spark."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from visionlake.config import load_config
from visionlake.operate.explore import decode_all, grid_per_label
from visionlake.lake.images import encode_png
from visionlake.operate.pipeline import DemoSummary, demo_settings


def test_demo_settings_shorten_the_generative_schedule_and_pick_the_normal_shapes():
    config = load_config(None, ["generative.epochs=50", "generative.model=vae", "demo.anomaly_epochs=3",
                                "demo.gan_epochs=7", "demo.quality_samples=64", "demo.quality_every_epochs=5",
                                "demo.generative_batch_size=8", "demo.gan_batch_size=4", "demo.gan_ranks=3",
                                "demo.normal_labels=[ring]"])

    demo, gan = demo_settings(config)

    assert (demo.generative.epochs, demo.generative.batch_size, demo.generative.quality.samples) == (3, 8, 64)
    assert (gan.generative.model, gan.generative.epochs, gan.generative.batch_size) == ("cdcgan", 7, 4)
    assert demo.generative.quality.every_epochs == gan.generative.quality.every_epochs == 5
    assert list(demo.anomaly.normal_labels) == list(gan.anomaly.normal_labels) == ["ring"]
    assert demo.generative.gan == config.generative.gan and demo.train == config.train
    assert gan.train == replace(config.train, num_proc=3)  # the GAN's own ranks; every other training setting kept


def test_demo_summary_reports_tables_aliases_rates_and_next_steps():
    summary = DemoSummary(dataset="demo", lake_root="/w/lake", tracking_uri="sqlite:////w/mlflow.db",
                          tables={"images": 600, "quarantine": 4, "predictions": 600, "synthetic": 0},
                          models={"visionlake-x": {}, "visionlake-classifier": {"champion": "2", "candidate": "3"}},
                          anomaly_rate=0.125, per_label_anomaly_rate={"ring": 0.0, "circle": 0.5},
                          step_seconds={"ingest": 10.0, "scoring": 5.4},
                          figures={"classifier test accuracy": "0.970 (target >= 0.95)"},
                          report_path="/w/demo-report.html")

    report = summary.report()

    assert summary.seconds == 15.4
    assert report.splitlines() == [
        "visionlake demo finished in 15s (ingest 10s, scoring 5s)",
        "lake /w/lake, dataset 'demo':",
        "  images          600 rows",
        "  quarantine        4 rows",
        "  predictions     600 rows",
        "  synthetic         0 rows",
        "registered models (sqlite:////w/mlflow.db):",
        "  visionlake-classifier    @candidate = v3, @champion = v2",
        "  visionlake-x             no alias",
        "anomaly rate 12.5% (per predicted label: circle 50%, ring 0%)",
        "models:",
        "  classifier test accuracy           0.970 (target >= 0.95)",
        "report: /w/demo-report.html   # open it in a browser: pictures of all of the above",
        "next:",
        "  make mlflow-ui                  # runs, sample grids, confusion matrices, models: http://127.0.0.1:5000",
        "  .venv/bin/jupyter lab notebooks/  # 01_explore_lake, 02_models, 03_anomalies (or: make notebooks)"]
    bare = DemoSummary("demo", "/w/lake", "sqlite:////w/mlflow.db", {}, {}, 0.0, {}).report().splitlines()
    assert "models:" not in bare and not [line for line in bare if line.startswith("report:")]


def test_grid_per_label_makes_one_row_per_label_from_png_bytes():
    def png(value: int) -> bytes:
        return encode_png(np.full((4, 5, 3), value, np.uint8), 1)

    rows = pd.DataFrame({"label_name": ["b", "a", "b", "b"], "image": [png(10), png(20), png(30), png(40)]})

    grids = grid_per_label(rows, per_label=2)

    assert list(grids) == ["a", "b"]
    assert grids["b"].shape == (4 + 2, 2 * (5 + 1) + 1, 3)  # two tiles with 1-pixel borders
    assert grids["b"][1, 1, 0] == 10 and grids["b"][1, 7, 0] == 30  # the first two of label b, in order
    assert decode_all([png(7)]).shape == (1, 4, 5, 3)


def test_demo_figures_state_each_model_s_figure_against_its_target():
    from types import SimpleNamespace

    from visionlake.operate.pipeline import demo_figures

    classifier, detector = SimpleNamespace(test_accuracy=0.9712), SimpleNamespace(val_auroc=0.98249)
    generator = SimpleNamespace(metrics={"fcd": 3.0, "fcd_train_test": 2.0, "fcd_samples": 500.0, "fcd_draws": 5.0,
                                         "selected_epoch": 36.0, "conditional_accuracy": 0.85,
                                         "conditional_accuracy_samples": 1000.0})
    assert demo_figures(classifier, detector, generator) == {
        "classifier test accuracy": "0.971 (target >= 0.95)",
        "anomaly detector val AUROC": "0.982 (target >= 0.95)",
        "conditional GAN conditional accuracy": "0.850 on 1000 generated images (target >= 0.8)",
        "conditional GAN FCD": "3.00 = 1.50x the train-vs-test floor 2.00, means of 5 draws of 500 images, "
                               "generator of epoch 36 (target <= 2x)"}
    unmeasured = demo_figures(classifier, SimpleNamespace(val_auroc=None), SimpleNamespace(metrics={}))
    assert unmeasured["anomaly detector val AUROC"] == "n/a (target >= 0.95)"
    assert unmeasured["conditional GAN conditional accuracy"] == "nan on 0 generated images (target >= 0.8)"
    assert "conditional GAN FCD" not in unmeasured  # no FCD without a floor to compare it with
    no_floor = SimpleNamespace(metrics={"fcd": 3.0, "fcd_train_test": 0.0})
    assert "conditional GAN FCD" not in demo_figures(classifier, detector, no_floor)


def test_a_demo_shape_is_a_light_part_on_a_dark_background_with_its_own_area():
    import math

    from visionlake.operate.demo_data import SHAPES, draw_shape

    def part(shape: str) -> np.ndarray:
        pixels = np.asarray(draw_shape(shape, 96, np.random.default_rng(3)))  # same draws for every shape
        assert pixels.shape == (96, 96, 3) and (pixels[0, 0] <= 30).all()
        light = (pixels >= 150).all(axis=-1)
        assert ((pixels <= 30).all(axis=-1) | light).all()  # two colours, no blending
        return light

    areas = {shape: part(shape).sum() for shape in SHAPES}
    # Same centre and radius r: circle pi r^2, square 2 r^2, triangle (3 sqrt(3) / 4) r^2; the ring and the cross
    # are lines r / 3 wide: pi (r^2 - (2r/3)^2) = (5/9) pi r^2, and two bars 2r long: about 4 r^2 / 3 - r^2 / 9.
    assert areas["square"] / areas["circle"] == pytest.approx(2 / math.pi, rel=0.1)
    assert areas["triangle"] / areas["circle"] == pytest.approx(3 * math.sqrt(3) / 4 / math.pi, rel=0.1)
    assert areas["ring"] / areas["circle"] == pytest.approx(5 / 9, rel=0.15)
    assert areas["cross"] / areas["circle"] == pytest.approx(11 / 9 / math.pi, rel=0.2)
    circle = part("circle")
    assert (part("ring") <= circle | np.roll(circle, 1, 0) | np.roll(circle, -1, 0)).mean() > 0.95  # its outline
    np.testing.assert_array_equal(np.asarray(draw_shape("ring", 40, np.random.default_rng(1))),
                                  np.asarray(draw_shape("ring", 40, np.random.default_rng(1))))
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        draw_shape("star", 40, np.random.default_rng(0))


def test_the_demo_source_is_written_where_the_ingest_reads_it(tmp_path):
    from visionlake.operate.demo_data import SHAPES, bad_files, write_demo_source

    config = load_config(None, ["demo.images_per_class=2", f"ingest.source.uri=file:{tmp_path}/raw"],
                         base_dir=str(tmp_path))
    assert write_demo_source(config) == tmp_path / "raw"
    files = sorted(str(p.relative_to(tmp_path / "raw")) for p in (tmp_path / "raw").rglob("*") if p.is_file())
    assert files == sorted([f"{shape}/{shape}_{i:04d}{suffix}" for shape in SHAPES for i, suffix in
                            ((0, ".png"), (1, ".jpg"))] + list(bad_files()))


def test_show_images_lays_out_one_titled_tile_per_image():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from visionlake.operate.explore import show_images

    images = np.zeros((10, 4, 4, 1), np.uint8)
    figure = show_images(images, titles=[f"t{i}" for i in range(10)], columns=4)
    try:
        axes = figure.axes
        assert len(axes) == 12  # 3 rows of 4
        assert [len(axis.images) for axis in axes] == [1] * 10 + [0] * 2
        assert [axis.get_title() for axis in axes[:10]] == [f"t{i}" for i in range(10)]
        assert axes[0].images[0].get_array().shape == (4, 4)  # grey tiles drawn without their channel axis
    finally:
        plt.close(figure)


def test_the_score_histogram_overlays_one_histogram_per_group_and_the_threshold():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from visionlake.operate.explore import score_histogram

    scores = pd.Series([0.1, 0.2, 0.2, 0.9, 0.8, 0.4])
    figure = score_histogram(scores, pd.Series(["ring", "circle", "circle", "ring", "ring", "circle"]),
                             threshold=0.55, bins=4)
    try:
        axis = figure.axes[0]
        assert sorted(text.get_text() for text in axis.get_legend().get_texts()) == ["circle", "ring",
                                                                                     "threshold 0.55"]
        # Shared bin edges 0.1, 0.3, 0.5, 0.7, 0.9; the groups in name order: circle, then ring.
        assert [[bar.get_height() for bar in bars] for bars in axis.containers] == [[2, 1, 0, 0], [1, 0, 0, 2]]
        assert [line.get_xdata()[0] for line in axis.get_lines()] == [0.55]
    finally:
        plt.close(figure)
