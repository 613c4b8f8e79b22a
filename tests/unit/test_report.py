"""The demo report's pure parts: the HTML holds every picture inline and escapes text; grids are cut per class."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from visionlake.operate.report import Anomaly, ReportInputs, as_png, grid_rows, histogram_png, render_html


def _png(value: int, size=(4, 4)) -> bytes:
    return as_png(np.full((*size, 1), value, np.uint8))


def test_the_html_holds_every_picture_inline_in_order_and_escapes_text():
    inputs = ReportInputs(dataset="<demo>", figures={"classifier test accuracy": "0.97 (target >= 0.95)"},
                          class_samples=[("circle", _png(1)), ("cross", _png(2))], confusion_png=_png(3),
                          histogram_png=_png(4), threshold=0.25,
                          anomalies=[Anomaly("abc123", "ring", 0.9, _png(5), _png(6)), Anomaly("def", "cross", 0.5,
                                                                                              _png(7))])
    page = render_html(inputs)
    pictures = [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert [np.asarray(Image.open(io.BytesIO(png)))[0, 0] for png in pictures] == [1, 2, 3, 4, 5, 6, 7]
    assert "&lt;demo&gt;" in page and "<demo>" not in page
    assert "0.97 (target &gt;= 0.95)" in page and "threshold 0.25" in page and "Top anomalies (2)" in page
    assert "src=" not in page.replace('src="data:image/png;base64,', ""), "nothing outside the file is loaded"


def test_missing_pictures_are_said_not_left_as_broken_images():
    page = render_html(ReportInputs("demo", {}, [], None, None, None))
    assert page.count("class='missing'") == 3 and "<img" not in page


def test_a_grid_is_cut_into_one_strip_per_class_scaled_three_times():
    grid = np.zeros((3 * 10, 40, 1), np.uint8)
    for row in range(3):
        grid[row * 10:(row + 1) * 10] = row * 100
    strips = [np.asarray(Image.open(io.BytesIO(png))) for png in grid_rows(as_png(grid), 3)]
    assert [strip.shape for strip in strips] == [(30, 120)] * 3
    assert [int(strip.mean()) for strip in strips] == [0, 100, 200]


_BARS, _THRESHOLD = (76, 120, 168), (228, 87, 86)  # #4c78a8 and #e45756


def _histogram(threshold) -> np.ndarray:
    png = histogram_png(np.random.default_rng(0).normal(size=500), threshold=threshold)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (700, 320)  # 7 x 3.2 inches at 100 dpi
    return np.asarray(image)[..., :3]


def _line_column(pixels: np.ndarray) -> float:
    """The mean column of the threshold colour's vertical line (columns where it runs over 50 rows)."""
    columns = (pixels == _THRESHOLD).all(axis=-1).sum(axis=0)
    assert (columns > 50).any(), "no vertical threshold line"
    return float(np.flatnonzero(columns > 50).mean())


def test_the_histogram_is_a_png_of_the_scores_with_the_threshold_as_a_vertical_line():
    plain = _histogram(None)
    assert (plain == _BARS).all(axis=-1).sum() > 10000  # the bars
    assert not (plain == _THRESHOLD).all(axis=-1).any()  # no threshold, no line
    low, middle, high = (_line_column(_histogram(t)) for t in (-1.0, 0.0, 1.5))
    assert low < middle < high  # the line stands at its score on the axis
    assert (high - middle) / (middle - low) == pytest.approx(1.5, rel=0.1)  # the axis is linear in the score
