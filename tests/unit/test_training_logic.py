import numpy as np
import pytest

from visionlake.config import TrainConfig
from visionlake.evaluate.classification import confusion_matrix, per_class_report
from visionlake.train.classifier import Plateau, learning_rate_at


def test_learning_rate_warms_up_to_the_scaled_rate_then_decays():
    settings = TrainConfig(learning_rate=0.001, warmup_epochs=1, scale_lr_by_ranks=True)
    steps = 10
    assert learning_rate_at(0, steps, settings, ranks=4, decay=1.0) == pytest.approx(0.001 + 0.003 / 10)
    assert learning_rate_at(9, steps, settings, ranks=4, decay=1.0) == pytest.approx(0.004)
    assert learning_rate_at(50, steps, settings, ranks=4, decay=0.5) == pytest.approx(0.002)
    unscaled = TrainConfig(learning_rate=0.001, warmup_epochs=0, scale_lr_by_ranks=False)
    assert learning_rate_at(0, steps, unscaled, ranks=4, decay=1.0) == pytest.approx(0.001)


def test_cosine_schedule_falls_to_zero_after_the_warm_up():
    settings = TrainConfig(learning_rate=0.001, warmup_epochs=1, epochs=5, lr_schedule="cosine")
    rates = [learning_rate_at(step, 10, settings, ranks=2, decay=0.5) for step in range(50)]
    assert rates[9] == pytest.approx(0.002) and rates[10] == pytest.approx(0.002)
    assert rates[30] == pytest.approx(0.001) and rates[-1] < 0.00002
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_plateau_decays_then_stops():
    plateau = Plateau(TrainConfig(lr_patience=2, lr_decay_factor=0.5, early_stopping_patience=3))
    assert [plateau.update(loss) for loss in (1.0, 0.9, 0.95, 0.95)] == [False, False, False, False]
    assert plateau.decay == 0.5
    assert plateau.update(0.96) is True


def test_confusion_matrix_and_per_class_report():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    matrix = confusion_matrix(labels, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    report = per_class_report(matrix, ["a", "b", "c"])
    assert report["b"] == {"precision": 2 / 3, "recall": 1.0, "support": 2}
    assert report["c"] == {"precision": 0.0, "recall": 0.0, "support": 1}


def test_best_weights_selection_and_nan_figures():
    from visionlake.train.loop import improved

    assert improved(0.5, None, "max") and improved(0.6, 0.5, "max") and not improved(0.4, 0.5, "max")
    assert improved(0.4, 0.5, "min") and not improved(0.6, 0.5, "min")
    nan = float("nan")
    # No validation figure (empty val split): keep the latest weights rather than freezing on epoch 0.
    assert improved(nan, None, "max") and improved(nan, nan, "max") and improved(0.1, nan, "max")


def test_checkpoint_store_resumes_the_latest_epoch_and_keeps_the_best_weights(tmp_path):
    import tensorflow as tf

    from visionlake.train.checkpoints import CheckpointStore, load_weights, snapshot_weights

    store = CheckpointStore(f"file:{tmp_path}/run")  # a lake URI as Spark writes it
    step = tf.Variable(0, dtype=tf.int64)
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    assert not store.restore(tf.train.Checkpoint(step=step, model=model)) and store.load_best() is None
    best = snapshot_weights({"model": model})
    store.save_best(best)
    for epoch in (1, 2, 3):
        step.assign(epoch)
        store.save(tf.train.Checkpoint(step=step, model=model), epoch)
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == ["epoch-000002", "epoch-000003"]

    resumed_step = tf.Variable(0, dtype=tf.int64)
    fresh = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    assert store.restore(tf.train.Checkpoint(step=resumed_step, model=fresh))
    assert int(resumed_step.numpy()) == 3
    np.testing.assert_array_equal(fresh.get_weights()[0], model.get_weights()[0])
    other = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    load_weights({"model": other}, store.load_best())
    np.testing.assert_array_equal(other.get_weights()[0], best["model"][0])
