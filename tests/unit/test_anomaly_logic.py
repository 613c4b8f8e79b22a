"""Anomaly arithmetic and scoring helpers without Spark: AUROC, calibration, top-k, slices, energy."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from visionlake.evaluate.anomaly import calibrate, flag, roc_auc
from visionlake.score.job import input_fingerprint, slice_id, top_k, with_predictions_run
from visionlake.models.scorers import as_unit_images, energy
from visionlake.tracking import ModelRef

from tests.unit.lake_records import a_manifest


def test_roc_auc_perfect_inverted_random_and_ties():
    labels = np.array([0, 0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), labels) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.ones(5), labels) == 0.5
    rng = np.random.default_rng(0)
    many = rng.integers(0, 2, 20000)
    assert roc_auc(rng.normal(size=20000), many) == pytest.approx(0.5, abs=0.02)
    # One tie across the classes counts half: 5 of 6 pairs ordered, one tied -> (5 + 0.5) / 6
    assert roc_auc(np.array([0.1, 0.5, 0.3, 0.5]), np.array([0, 0, 1, 1])) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="both normal and anomalous"):
        roc_auc(np.array([0.1, 0.2]), np.array([0, 0]))


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.05, 0.1, 0.25])
def test_calibration_reaches_the_false_positive_rate_on_the_calibration_set(rate):
    scores = np.random.default_rng(1).gamma(2.0, size=1000)
    calibration = calibrate(scores, rate)
    flagged = flag(scores, calibration.threshold).mean()
    assert flagged == calibration.achieved_false_positive_rate
    assert rate - 1 / 1000 <= flagged <= rate
    assert calibration.calibration_images == 1000 and calibration.quantiles["p50"] == pytest.approx(
        np.quantile(scores, 0.5))


def test_calibration_refuses_what_it_cannot_calibrate():
    with pytest.raises(ValueError, match="held-out normal images"):
        calibrate(np.array([]), 0.05)
    with pytest.raises(ValueError, match="non-finite"):
        calibrate(np.array([1.0, np.nan]), 0.05)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        calibrate(np.array([1.0, 2.0]), 1.0)


def test_top_k_orders_by_probability():
    labels, probabilities = top_k(np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]]), 2)
    assert labels.tolist() == [[1, 2], [0, 2]] and probabilities.tolist() == [[0.7, 0.2], [0.5, 0.4]]
    assert top_k(np.array([[0.6, 0.4]]), 5)[0].shape == (1, 2)


def test_energy_is_low_for_confident_logits():
    confident, unsure = energy(np.array([[10.0, 0.0, 0.0], [0.1, 0.0, 0.05]]))
    assert confident < unsure
    assert energy(np.array([[1000.0, 0.0]]))[0] == pytest.approx(-1000.0)  # no overflow


def test_images_are_accepted_as_uint8_float_or_png_frames():
    import pandas as pd

    from visionlake.lake.images import encode_png

    pixels = np.full((2, 4, 4, 1), 255, np.uint8)
    assert as_unit_images(pixels, (4, 4, 1)).max() == 1.0
    assert as_unit_images(pixels[..., 0], (4, 4, 1)).shape == (2, 4, 4, 1)
    frame = pd.DataFrame({"image": [encode_png(p, 1) for p in pixels]})
    assert np.array_equal(as_unit_images(frame, (4, 4, 1)), as_unit_images(pixels, (4, 4, 1)))
    with pytest.raises(ValueError, match="expected images of shape"):
        as_unit_images(pixels, (8, 8, 1))


def test_a_slice_is_a_table_with_one_version_of_each_model():
    classifier, detector = ModelRef("c", "1", "r1"), ModelRef("a", "2", "r2")
    manifest = a_manifest(runs=({"run_id": "i1"}, {"run_id": "g1", "kind": "synthetic"},
                                {"run_id": "p1", "kind": "predictions"}),
                          live_runs=("i1", "g1", "p1"), synthetic={"live_runs": ["g1"]})
    assert input_fingerprint(manifest, "images") == "images:i1"
    assert input_fingerprint(manifest, "synthetic") == "synthetic:g1"
    key = slice_id("images", classifier, detector)
    assert key == slice_id("images", classifier, detector) != slice_id("synthetic", classifier, detector)
    assert key != slice_id("images", classifier, ModelRef("a", "3", "r3"))


def test_rescoring_a_slice_replaces_its_previous_run():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    manifest = a_manifest(version=2, live_runs=("i1",), runs=({"run_id": "i1"},), tables={"images": "/lake/d/images"})
    first, replaced = with_predictions_run(manifest, "p1", "s", {"x": 1}, now, "/lake/d/predictions")
    assert replaced == "" and first.live_runs == ("i1", "p1") and first.version == 3
    second, replaced = with_predictions_run(first, "p2", "s", {"x": 2}, now, "/lake/d/predictions")
    assert replaced == "p1" and second.live_runs == ("i1", "p2")
    assert second.predictions["slices"]["s"]["run_id"] == "p2"
    other, replaced = with_predictions_run(second, "p3", "t", {}, now, "/lake/d/predictions")
    assert replaced == "" and other.live_runs == ("i1", "p2", "p3")
