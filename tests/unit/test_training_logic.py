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
    rates = [learning_rate_at(step, 10, settings, ranks=2, decay=0.5) for step in range(70)]
    assert rates[9] == pytest.approx(0.002) and rates[10] == pytest.approx(0.002)  # the plateau decay plays no part
    # 0.002 (1 + cos(pi p)) / 2 over the 40 steps after the warm-up: p = 1/4, 1/2, 3/4, then 0 from the end on
    half_root_two = 2 ** 0.5 / 2
    assert rates[20] == pytest.approx(0.001 * (1 + half_root_two), rel=1e-9)
    assert rates[30] == pytest.approx(0.001, rel=1e-9)
    assert rates[40] == pytest.approx(0.001 * (1 - half_root_two), rel=1e-9)
    assert rates[50:] == [0.0] * 20  # steps past the last epoch (a resumed run's rounding) stay at zero
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


def test_training_curves_are_one_panel_per_figure_group(tmp_path):
    from PIL import Image

    from visionlake.evaluate.classification import plot_curves

    history = [{"epoch": 1, "loss": 1.0, "val_loss": 1.2, "accuracy": 0.5}, {"epoch": 2, "loss": 0.5, "accuracy": 0.8}]
    assert plot_curves(history, tmp_path / "curves.png") == tmp_path / "curves.png"  # a missing figure is a gap
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1000, 400)  # two 5 x 4 inch panels at 100 dpi
    three = {"a": ("loss",), "b": ("accuracy",), "c": ("val_loss",)}
    with Image.open(plot_curves(history, tmp_path / "three.png", three)) as image:
        assert image.size == (1500, 400)


def test_the_confusion_matrix_figure_grows_with_the_classes(tmp_path):
    from PIL import Image

    from visionlake.evaluate.classification import plot_confusion_matrix

    for names, side in ((["a", "b", "c"], 280), (["a"] * 10, 700)):  # 1 + 0.6 inches per class, 100 dpi
        path = plot_confusion_matrix(np.eye(len(names), dtype=int), names, tmp_path / f"{len(names)}.png")
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (side, side)


def test_the_weights_digest_is_the_sha256_of_every_weight_of_every_model_in_order():
    import hashlib
    from types import SimpleNamespace

    from visionlake.train.loop import weights_digest

    def model(*weights):
        return SimpleNamespace(get_weights=lambda: [np.asarray(w, np.float32) for w in weights])

    a, b = model([1.0, 2.0], [[3.0]]), model([4.0])
    expected = hashlib.sha256(np.array([1, 2, 3, 4], np.float32).tobytes()).hexdigest()
    assert weights_digest(a, b) == expected
    assert weights_digest(b, a) != expected and weights_digest(model([1.0, 2.0], [[3.5]]), b) != expected
    assert weights_digest() == hashlib.sha256().hexdigest()


def test_a_rank_task_adds_nothing_it_does_not_override():
    from visionlake.train.loop import RankTask

    task = RankTask()
    assert task.before_step(3) is None and task.after_restore() is None
    assert task.validate(None) == {} and task.epoch_figures() == {}
    assert task.should_stop({"val_loss": 1.0}) is False
    assert task.on_epoch_end_rank_zero(1, True, None, "run") == {}
    with pytest.raises(NotImplementedError):
        task.train_step(None, None)


@pytest.mark.parametrize("master, loopback", [
    ("local", True), ("local[4]", True), ("local[*]", True),
    ("spark://127.0.0.1:7077", True), ("spark://localhost:7077", True),
    ("spark://127.0.0.10:7077", False), ("spark://master:7077", False), ("yarn", False),
    ("k8s://https://127.0.0.1:6443", False),
])
def test_ranks_talk_over_loopback_only_when_every_node_is_this_machine(master, loopback):
    from visionlake.train.launcher import on_loopback

    assert on_loopback(master) is loopback


def test_ranks_share_the_cores_unless_told_how_many_threads_each_takes():
    from visionlake.train.launcher import threads_per_rank

    assert [threads_per_rank(8, 2, 0), threads_per_rank(8, 3, 0), threads_per_rank(2, 4, 0)] == [4, 2, 1]
    assert threads_per_rank(8, 0, 0) == 8 and threads_per_rank(8, 2, 3) == 3


def test_a_rank_hands_its_input_iterator_to_a_thread_that_nothing_waits_for():
    import threading

    from visionlake.train.loop import release_in_background

    caller_went_on, seen = threading.Event(), {}

    class SlowToTearDown:  # a tf.data iterator whose teardown waits on its prefetch thread
        def __del__(self):
            seen["caller_went_on_first"] = caller_went_on.wait(timeout=10)
            seen["thread"] = threading.current_thread()

    owner = [SlowToTearDown()]
    release_in_background(owner)
    caller_went_on.set()  # reached at once: a teardown on this thread would have waited 10 s first
    for _ in range(100):
        if "thread" in seen:
            break
        threading.Event().wait(0.05)
    assert seen["caller_went_on_first"] and seen["thread"] is not threading.main_thread()
    assert seen["thread"].daemon
