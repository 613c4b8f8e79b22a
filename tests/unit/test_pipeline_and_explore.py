"""The demo pipeline's settings and summary, and the notebook helpers, without Spark."""
from __future__ import annotations

import numpy as np
import pandas as pd

from visionlake.config import load_config
from visionlake.operate.explore import decode_all, grid_per_label
from visionlake.lake.images import encode_png
from visionlake.operate.pipeline import DemoSummary, demo_settings


def test_demo_settings_shorten_the_generative_schedule_and_pick_the_normal_shapes():
    config = load_config(None, ["generative.epochs=50", "generative.model=vae", "demo.anomaly_epochs=3",
                                "demo.gan_epochs=7", "demo.quality_samples=64", "demo.quality_every_epochs=5",
                                "demo.generative_batch_size=8", "demo.normal_labels=[ring]"])

    demo, gan = demo_settings(config)

    assert (demo.generative.epochs, demo.generative.batch_size, demo.generative.quality.samples) == (3, 8, 64)
    assert (gan.generative.model, gan.generative.epochs, gan.generative.batch_size) == ("cdcgan", 7, 8)
    assert demo.generative.quality.every_epochs == gan.generative.quality.every_epochs == 5
    assert list(demo.anomaly.normal_labels) == list(gan.anomaly.normal_labels) == ["ring"]
    assert demo.generative.gan == config.generative.gan and demo.train == gan.train == config.train


def test_demo_summary_reports_tables_aliases_rates_and_next_steps():
    summary = DemoSummary(dataset="demo", lake_root="/w/lake", tracking_uri="sqlite:////w/mlflow.db",
                          tables={"images": 600, "quarantine": 4, "predictions": 600, "synthetic": 0},
                          models={"visionlake-classifier": {"champion": "2", "candidate": "3"}, "visionlake-x": {}},
                          anomaly_rate=0.125, per_label_anomaly_rate={"circle": 0.5, "ring": 0.0},
                          step_seconds={"ingest": 10.0, "scoring": 5.0})

    report = summary.report()

    assert summary.seconds == 15.0
    assert "finished in 15s (ingest 10s, scoring 5s)" in report
    assert "images          600 rows" in report and "quarantine        4 rows" in report
    assert "@candidate = v3, @champion = v2" in report and "visionlake-x" in report and "no alias" in report
    assert "anomaly rate 12.5% (per predicted label: circle 50%, ring 0%)" in report
    assert "make mlflow-ui" in report and "notebooks" in report


def test_grid_per_label_makes_one_row_per_label_from_png_bytes():
    def png(value: int) -> bytes:
        return encode_png(np.full((4, 5, 3), value, np.uint8), 1)

    rows = pd.DataFrame({"label_name": ["b", "a", "b", "b"], "image": [png(10), png(20), png(30), png(40)]})

    grids = grid_per_label(rows, per_label=2)

    assert list(grids) == ["a", "b"]
    assert grids["b"].shape == (4 + 2, 2 * (5 + 1) + 1, 3)  # two tiles with 1-pixel borders
    assert grids["b"][1, 1, 0] == 10 and grids["b"][1, 7, 0] == 30  # the first two of label b, in order
    assert decode_all([png(7)]).shape == (1, 4, 5, 3)
