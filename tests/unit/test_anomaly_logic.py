"""Anomaly arithmetic and scoring helpers without Spark: AUROC, calibration, top-k, slices, energy."""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

import numpy as np
import pytest

from visionlake.evaluate.anomaly import calibrate, flag, roc_auc
from visionlake.score.job import input_fingerprint, slice_id, top_k, with_predictions_run
from visionlake.models.scorers import as_unit_images, energy
from visionlake.tracking import ModelRef

from tests.unit.lake_records import a_manifest


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The AUROC by its definition: the share of (anomalous, normal) pairs ordered right, ties counting half."""
    anomalous, normal = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(((anomalous > normal).sum() + 0.5 * (anomalous == normal).sum()) / (anomalous.size * normal.size))


def test_roc_auc_perfect_inverted_random_and_ties():
    labels = np.array([0, 0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), labels) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.ones(5), labels) == 0.5
    # One tie across the classes counts half: 5 of 6 pairs ordered, one tied -> (5 + 0.5) / 6
    assert roc_auc(np.array([0.1, 0.5, 0.3, 0.5]), np.array([0, 0, 1, 1])) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="both normal and anomalous"):
        roc_auc(np.array([0.1, 0.2]), np.array([0, 0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_is_the_share_of_correctly_ordered_pairs_with_ties_counting_half(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 700)
    scores = rng.integers(0, 25, 700) + 3 * labels  # few distinct values: many ties within and across the classes
    assert roc_auc(scores, labels) == pytest.approx(_pairwise_auc(scores, labels), abs=1e-12)
    assert roc_auc(-scores, labels) == pytest.approx(1 - _pairwise_auc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("rate, allowed", [(0.0, 0), (0.01, 10), (0.05, 50), (0.1, 100), (0.25, 250)])
def test_calibration_reaches_the_false_positive_rate_on_the_calibration_set(rate, allowed):
    scores = np.random.default_rng(1).gamma(2.0, size=1000)  # continuous: no two scores equal
    calibration = calibrate(scores, rate)
    # Exactly floor(rate * n) images are flagged, and the threshold lies halfway between the highest score kept and
    # the lowest flagged (the highest score when none may be flagged): a rescored image's rounding never crosses it.
    assert int(flag(scores, calibration.threshold).sum()) == allowed
    kept, flagged = scores[scores <= calibration.threshold], scores[scores > calibration.threshold]
    if allowed:
        assert kept.max() < calibration.threshold < flagged.min()
        for rounding in (1 + 1e-7, 1 - 1e-7):  # float32 rounding of each score when it is rescored elsewhere
            assert int(flag(scores * rounding, calibration.threshold).sum()) == allowed
    assert calibration.achieved_false_positive_rate == allowed / 1000
    assert calibration.target_false_positive_rate == rate and calibration.calibration_images == 1000


def test_calibration_with_tied_scores_flags_fewer_rather_than_more_than_the_rate():
    calibration = calibrate(np.array([3.0, 1.0, 2.0, 2.0, 2.0]), 0.4)  # 2 of 5 allowed; the 2.0s go together
    assert calibration.threshold == 2.5 and calibration.achieved_false_positive_rate == 0.2
    assert flag(np.array([3.0, 1.0, 2.0, 2.0, 2.0]), calibration.threshold).tolist() == [True, False, False, False,
                                                                                            False]


def test_calibration_summarises_the_scores_by_quantiles_mean_and_spread():
    from visionlake.evaluate.anomaly import summarise

    scores = np.arange(101.0)[::-1]  # 100, 99, ..., 0: the q-quantile is 100 q
    expected = {"p01": 1.0, "p05": 5.0, "p25": 25.0, "p50": 50.0, "p75": 75.0, "p95": 95.0, "p99": 99.0}
    assert summarise(scores) == pytest.approx(expected) and list(summarise(scores)) == list(expected)
    calibration = calibrate(scores, 0.05)
    assert calibration.quantiles == pytest.approx(expected)
    assert calibration.mean == 50.0 and calibration.std == pytest.approx(850 ** 0.5)  # (101^2 - 1) / 12 = 850
    assert calibration.to_dict()["threshold"] == calibration.threshold == 95.5  # 5 of 101 allowed above: 96..100


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


def test_energy_is_minus_the_log_of_the_summed_exponentials_of_the_logits():
    import math

    confident, unsure, even = energy(np.array([[10.0, 0.0, 0.0], [0.1, 0.0, 0.05], [0.0, 0.0, 0.0]]))
    assert confident == pytest.approx(-math.log(math.exp(10) + 2), abs=1e-12)
    assert unsure == pytest.approx(-math.log(math.exp(0.1) + 1 + math.exp(0.05)), abs=1e-12)
    assert even == pytest.approx(-math.log(3), abs=1e-12)
    assert confident < unsure  # low for inputs the classifier is confident about
    assert energy(np.array([[1000.0, 0.0]]))[0] == pytest.approx(-1000.0)  # no overflow


def test_images_are_accepted_as_uint8_float_or_png_frames():
    import pandas as pd

    from visionlake.lake.images import encode_png

    pixels = np.array([0, 51, 102, 255] * 8, np.uint8).reshape(2, 4, 4, 1)
    unit = pixels.astype(np.float32) / np.float32(255)
    assert as_unit_images(pixels, (4, 4, 1)).dtype == np.float32
    np.testing.assert_array_equal(as_unit_images(pixels, (4, 4, 1)), unit)
    np.testing.assert_array_equal(as_unit_images(pixels[..., 0], (4, 4, 1)), unit)  # grey without a channel axis
    np.testing.assert_array_equal(as_unit_images(unit, (4, 4, 1)), unit)  # floats are already in [0, 1]
    frame = pd.DataFrame({"image": [encode_png(p, 1) for p in pixels]})
    np.testing.assert_array_equal(as_unit_images(frame, (4, 4, 1)), unit)
    with pytest.raises(ValueError, match="expected images of shape"):
        as_unit_images(pixels, (8, 8, 1))


def test_a_slice_is_a_table_with_one_version_of_each_model():
    classifier, detector = ModelRef("c", "1", "r1"), ModelRef("a", "2", "r2")
    manifest = a_manifest(runs=({"run_id": "i0"}, {"run_id": "i2"}, {"run_id": "i1"}),
                          live_runs=("i2", "i1"), synthetic={"live_runs": ["g1"]})
    assert input_fingerprint(manifest, "images") == "images:i1,i2"  # live ingest runs only (i0 was replaced), sorted
    assert input_fingerprint(manifest, "synthetic") == "synthetic:g1"
    key = slice_id("images", classifier, detector)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    # Which runs trained the versions is no part of it: the same versions are the same slice.
    assert slice_id("images", ModelRef("c", "1", "other"), ModelRef("a", "2", "another")) == key
    # The table and each model's name and version are, without two ever running together ("c" "11" vs "c1" "1").
    others = [slice_id("synthetic", classifier, detector),
              slice_id("images", ModelRef("b", "1", "r1"), detector),
              slice_id("images", ModelRef("c", "9", "r1"), detector),
              slice_id("images", classifier, ModelRef("b", "2", "r2")),
              slice_id("images", classifier, ModelRef("a", "3", "r3")),
              slice_id("images", ModelRef("c", "11", "r1"), detector),
              slice_id("images", ModelRef("c1", "1", "r1"), detector)]
    assert len({key, *others}) == 1 + len(others)


def test_rescoring_a_slice_replaces_its_previous_run():
    manifest = a_manifest(version=2, live_runs=("i1",), runs=({"run_id": "i1"},))
    first, replaced = with_predictions_run(manifest, "p1", "s", {"x": 1})
    assert replaced == "" and first == {"slices": {"s": {"run_id": "p1", "x": 1}}}
    second, replaced = with_predictions_run(dataclasses.replace(manifest, predictions=first), "p2", "s", {"x": 2})
    assert replaced == "p1" and second == {"slices": {"s": {"run_id": "p2", "x": 2}}}
    other, replaced = with_predictions_run(dataclasses.replace(manifest, predictions=second), "p3", "t", {})
    assert replaced == "" and set(other["slices"]) == {"s", "t"} and other["slices"]["s"]["run_id"] == "p2"
    assert manifest.predictions is None  # the input is not modified


def _saved(tmp_path, name: str, layer) -> str:
    """A one-layer Keras network on 8 x 8 grey images, saved as a scorer artifact."""
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), layer], name=name)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    return path


def test_a_reconstructing_scorer_loads_its_networks_and_scores_the_squared_residual(tmp_path):
    import tensorflow as tf
    from types import SimpleNamespace

    from visionlake.models.scorers import AnomalyScorer

    # An "autoencoder" that draws every image black (-1 in tanh): the residual of a pixel v in [0, 1] is (2v)^2 / 4.
    black = _saved(tmp_path, "black", tf.keras.layers.Rescaling(0.0, offset=-1.0))
    scorer = AnomalyScorer("autoencoder", (8, 8, 1))
    scorer.load_context(SimpleNamespace(artifacts={"autoencoder": black, "calibration": "/x/calibration.json"}))
    assert set(scorer.networks) == {"autoencoder"}  # only the .keras artifacts are networks
    images = np.zeros((600, 8, 8, 1), np.uint8)  # more than one scoring batch
    images[:, :4] = 255
    images[1::2, :, :4] = 51  # odd images: 16 pixels at 1, 32 at 0.2, 16 at 0
    expected = np.where(np.arange(600) % 2, (16 * 1 + 32 * 0.2 ** 2) / 64, 32 / 64)  # the mean of v^2
    np.testing.assert_allclose(scorer.score(images), expected, rtol=1e-6)
    np.testing.assert_allclose(scorer.reconstruct(images[:2]), np.zeros((2, 8, 8, 1)), atol=1e-7)
    np.testing.assert_allclose(scorer.anomaly_map(images[:2]), images[:2, ..., 0] / 255.0, rtol=1e-6)
    same = AnomalyScorer("autoencoder", (8, 8, 1)).load_networks(
        {"autoencoder": _saved(tmp_path, "same", tf.keras.layers.Rescaling(1.0))})
    np.testing.assert_allclose(same.score(images[:4]), 0.0, atol=1e-12)  # a perfect reconstruction: no residual


def test_a_classifier_scorer_scores_the_energy_of_its_logits_and_draws_no_map(tmp_path):
    import math

    import tensorflow as tf

    from visionlake.models.scorers import AnomalyScorer

    classifier = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                      tf.keras.layers.Dense(2, name="logits"), tf.keras.layers.Softmax()])
    classifier.get_layer("logits").set_weights([np.zeros((64, 2), np.float32), np.array([1.0, 2.0], np.float32)])
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    scorer = AnomalyScorer("classifier", (8, 8, 1)).load_networks({"classifier": path})
    scores = scorer.score(np.zeros((3, 8, 8, 1), np.uint8))
    np.testing.assert_allclose(scores, [-math.log(math.e + math.e ** 2)] * 3, rtol=1e-6)  # logits, not softmax
    assert scorer.reconstruct(np.zeros((1, 8, 8, 1), np.uint8)) is None
    assert scorer.anomaly_map(np.zeros((1, 8, 8, 1), np.uint8)) is None
    with pytest.raises(ValueError, match="unknown anomaly method 'pca'"):
        AnomalyScorer("pca", (8, 8, 1))


def test_an_anomaly_map_is_drawn_grey_with_its_largest_difference_white():
    from visionlake.lake.images import decode_stored_image
    from visionlake.models.scorers import anomaly_map_png

    drawn = decode_stored_image(anomaly_map_png(np.array([[0.0, 0.5], [0.25, 0.5]])))
    assert drawn[..., 0].tolist() == [[0, 255], [128, 255]]  # 0.25 / 0.5 * 255 = 127.5 -> 128
    assert decode_stored_image(anomaly_map_png(np.zeros((2, 3))))[..., 0].tolist() == [[0, 0, 0]] * 2


def test_the_normal_labels_are_the_ids_of_the_named_classes_or_all_of_them():
    from visionlake.config import ConfigError
    from visionlake.train.detectors import normal_label_ids

    manifest = a_manifest(label_names=("circle", "ring", "square"))
    assert normal_label_ids(manifest, ["square", "circle"]) == (0, 2)
    assert normal_label_ids(manifest, []) == (0, 1, 2)
    with pytest.raises(ConfigError, match=r"anomaly.normal_labels: \['star'\] not in dataset 'd'"):
        normal_label_ids(manifest, ["star", "ring"])
