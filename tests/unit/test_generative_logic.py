"""Generative pieces without Spark: network shapes, Fréchet distance, grids, generation planning, model references."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import replace
import math

import numpy as np
import pytest

from visionlake.config import AutoencoderConfig, GanConfig
from visionlake.evaluate.measures import (Gaussian, fit_gaussian, frechet_distance, frechet_features_distance,
                                          image_grid, per_image_mse, to_uint8)
from visionlake.score.synthetic import GenerationRequest, find_existing, plan_tasks, task_seed, with_synthetic_run
from visionlake.tracking import parse_model_reference

from tests.unit.lake_records import a_manifest


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 3)])
def test_every_network_fits_the_dataset_shape(shape):
    from visionlake.models.generative import build_autoencoder, build_discriminator, build_generator

    gan = GanConfig(latent_dim=8, filters=8, embedding_dim=4)
    latent = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    labels = np.array([[0], [4]], np.int32)
    images = np.zeros((2, *shape), np.float32)
    generated = build_generator(shape, gan)(latent).numpy()
    assert generated.shape == (2, *shape) and np.abs(generated).max() <= 1.0  # tanh
    assert build_generator(shape, gan, num_classes=5)([latent, labels]).shape == (2, *shape)
    assert build_discriminator(shape, gan)(images).shape == (2, 1)
    plain = GanConfig(latent_dim=8, filters=8, embedding_dim=4, class_loss_weight=0.0)
    assert build_discriminator(shape, plain, num_classes=5)([images, labels]).shape == (2, 1)
    logit, class_logits = build_discriminator(shape, gan, num_classes=5)([images, labels])
    assert logit.shape == (2, 1) and class_logits.shape == (2, 5)  # AC-GAN: real/fake and the class
    for variational in (False, True):
        autoencoder = build_autoencoder(shape, AutoencoderConfig(latent_dim=4, filters=8), variational)
        assert autoencoder.model(images).shape == (2, *shape)
        assert autoencoder.decoder(latent[:, :4]).shape == (2, *shape)


class _OneProcess:
    """Horovod's surface that the GAN steps use, for one process: gradients are already the global ones."""

    @staticmethod
    def DistributedGradientTape(tape):
        return tape


def test_the_class_head_sees_the_image_only_and_the_label_moves_the_real_fake_logit():
    import tensorflow as tf

    from visionlake.models.generative import build_discriminator

    tf.keras.utils.set_random_seed(0)
    gan = GanConfig(latent_dim=8, filters=8, embedding_dim=4, class_loss_weight=1.0, dropout=0.0)
    discriminator = build_discriminator((8, 8, 1), gan, 4)
    images = tf.random.uniform((6, 8, 8, 1), -1.0, 1.0)
    logit_a, classes_a = discriminator([images, tf.zeros((6, 1), tf.int32)], training=False)
    logit_b, classes_b = discriminator([images, tf.fill((6, 1), 3)], training=False)
    # A head that could read the label would name the class without looking at the image.
    np.testing.assert_allclose(classes_a.numpy(), classes_b.numpy())
    assert not np.allclose(logit_a.numpy(), logit_b.numpy()), "the label is part of the real/fake judgement"


def test_acgan_class_head_learns_real_classes_and_pulls_the_generator_towards_them():
    import tensorflow as tf

    from visionlake.train.generative import make_gan_steps
    from visionlake.models.generative import build_discriminator, build_generator

    tf.keras.utils.set_random_seed(0)
    gan = GanConfig(latent_dim=8, filters=8, embedding_dim=4, learning_rate=0.005, class_loss_weight=1.0)
    shape, classes = (8, 8, 1), 4
    labels = tf.constant(np.arange(64) % classes, tf.int32)
    real = tf.reshape(tf.repeat(tf.cast(labels, tf.float32) / 2.0 - 0.75, 64), (64, *shape))  # class = brightness
    generator, discriminator = build_generator(shape, gan, classes), build_discriminator(shape, gan, classes)
    d_step, g_step = make_gan_steps(generator, discriminator, tf.keras.optimizers.Adam(gan.learning_rate),
                                    tf.keras.optimizers.Adam(gan.learning_rate), tf.random.Generator.from_seed(1),
                                    gan, True, _OneProcess)
    cross_entropy = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def class_loss(images):
        return float(cross_entropy(labels, discriminator([images, labels[:, None]], training=False)[1]))

    def fakes(network):
        return network([tf.random.Generator.from_seed(2).normal([64, 8]), labels[:, None]], training=False)

    untrained = build_generator(shape, gan, classes)
    untrained.set_weights(generator.get_weights())
    real_before = class_loss(real)
    for _ in range(60):
        d_step(real, labels)
    for _ in range(120):
        d_step(real, labels)
        g_step(labels)
    assert class_loss(real) < 0.3 * real_before, "the class head learns the real images' classes"
    # Judged by the same trained class head, the trained generator's images show the asked-for class far better
    # than the same generator's before training.
    assert class_loss(fakes(generator)) < 0.5 * class_loss(fakes(untrained)), \
        "the generator learns to draw the class it is asked for"


def _slope_at_real_images_after_training(r1_gamma: float) -> float:
    """Mean squared gradient norm of the real/fake logit at the real images after 40 discriminator steps."""
    import tensorflow as tf

    from visionlake.models.generative import build_discriminator, build_generator
    from visionlake.train.generative import make_gan_steps

    tf.keras.utils.set_random_seed(0)
    gan = GanConfig(latent_dim=8, filters=8, embedding_dim=4, learning_rate=0.005, dropout=0.0, r1_gamma=r1_gamma)
    shape = (8, 8, 1)
    real = tf.random.uniform((32, *shape), 0.2, 1.0)
    generator, discriminator = build_generator(shape, gan), build_discriminator(shape, gan)
    d_step, _ = make_gan_steps(generator, discriminator, tf.keras.optimizers.Adam(gan.learning_rate),
                               tf.keras.optimizers.Adam(gan.learning_rate), tf.random.Generator.from_seed(1),
                               gan, False, _OneProcess)
    labels = tf.zeros((32,), tf.int32)
    for _ in range(40):
        d_step(real, labels)
    with tf.GradientTape() as tape:
        tape.watch(real)
        total = tf.reduce_sum(discriminator(real, training=True))
    return float(tf.reduce_mean(tf.reduce_sum(tf.square(tape.gradient(total, real)), axis=[1, 2, 3])))


def test_the_r1_penalty_flattens_the_discriminator_at_real_images():
    unpenalised = _slope_at_real_images_after_training(0.0)
    assert _slope_at_real_images_after_training(10.0) < 0.2 * unpenalised


def test_the_registered_generator_is_the_moving_average_of_the_trained_weights():
    import tensorflow as tf

    from visionlake.config import GenerativeConfig
    from visionlake.train.generative import AVERAGE_GENERATOR, make_average_update, registered_network
    from visionlake.models.generative import build_generator

    gan = GanConfig(latent_dim=8, filters=8, embedding_dim=4, average_decay=0.9)
    trained, average = build_generator((8, 8, 1), gan), build_generator((8, 8, 1), gan)
    start = [w.copy() for w in trained.get_weights()]
    average.set_weights(start)
    update = make_average_update(average, trained, gan.average_decay)
    target = [w + 1.0 for w in start]
    trained.set_weights(target)  # as if training had moved every weight by one
    for _ in range(10):
        update()
    moved = 1 - 0.9 ** 10  # the share of the way from the old weights to the new after 10 steps
    for averaged, old in zip(average.get_weights(), start):
        np.testing.assert_allclose(averaged, old + moved, rtol=1e-5, atol=1e-5)
    assert isinstance(update, tf.types.experimental.GenericFunction)  # one graph, not Python per weight per step

    networks = {"generator": trained, "discriminator": None, AVERAGE_GENERATOR: average}
    cdcgan = GenerativeConfig(model="cdcgan", gan=gan)
    assert registered_network(cdcgan, networks) is average
    assert registered_network(cdcgan, {"generator": trained}) is trained  # built without averaging: the raw weights


def test_a_run_resumed_with_averaging_starts_the_average_from_the_restored_generator(tmp_path):
    """A checkpoint (or best weights) from a run started with average_decay 0 has no averaged generator."""
    from types import SimpleNamespace

    import tensorflow as tf

    from visionlake.config import GenerativeConfig
    from visionlake.train.generative import AVERAGE_GENERATOR, GanTask, with_average

    def task(decay: float) -> GanTask:
        settings = GenerativeConfig(model="dcgan", gan=GanConfig(latent_dim=8, filters=8, average_decay=decay))
        job = SimpleNamespace(settings=settings, num_classes=0,
                              loop=SimpleNamespace(spec=SimpleNamespace(image_shape=(8, 8, 1)),
                                                   rank_settings=SimpleNamespace(seed=1)))
        return GanTask(job, SimpleNamespace(rank=lambda: 0))

    old = task(0.0)
    old.generator.set_weights([w + 0.5 for w in old.generator.get_weights()])  # "trained"
    path = tf.train.Checkpoint(**old.networks).write(str(tmp_path / "ckpt"))
    resumed = task(0.99)
    tf.train.Checkpoint(**resumed.networks).read(path).expect_partial()
    resumed.after_restore()
    for averaged, restored in zip(resumed.sampler.get_weights(), old.generator.get_weights()):
        np.testing.assert_array_equal(averaged, restored)

    weights = {"generator": [np.ones(2)], "discriminator": [np.zeros(2)]}
    assert with_average(weights)[AVERAGE_GENERATOR] is weights["generator"]
    averaged = [np.zeros(2)]
    assert with_average({**weights, AVERAGE_GENERATOR: averaged})[AVERAGE_GENERATOR] is averaged  # kept as it is


def _judge_that_always_answers(label: int, shape=(32, 32, 3), classes=5):
    """A judge whose classifier predicts ``label`` for every image (zero logit weights, one large bias)."""
    from visionlake.models.classifier import build_classifier
    from visionlake.evaluate.generative import Judge

    classifier = build_classifier("lenet", shape, classes)
    logits = classifier.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([np.zeros_like(kernel), np.eye(classes, dtype=bias.dtype)[label] * 10.0])
    return Judge(classifier)


def test_conditional_accuracy_uses_every_requested_sample_and_each_fcd_draw_as_many_as_the_real_images():
    from visionlake.models.generative import build_generator
    from visionlake.evaluate.generative import FCD_DRAWS, GanQuality, generate, mean_fcd

    shape, classes = (32, 32, 3), 5
    judge = _judge_that_always_answers(2)
    rng = np.random.default_rng(0)
    real, val, train = (rng.uniform(-1, 1, (count, *shape)).astype(np.float32) for count in (12, 12, 40))
    quality = GanQuality(judge, fit_gaussian(judge.features(real)), fit_gaussian(judge.features(train)),
                         fit_gaussian(judge.features(val)), floor_fcd=1.0, samples=len(real), num_classes=classes,
                         seed=3, accuracy_samples=60)
    generator = build_generator(shape, GanConfig(latent_dim=8, filters=8, embedding_dim=4), classes)

    figures = quality.evaluate(generator)

    assert figures["fcd_samples"] == 12 and figures["conditional_accuracy_samples"] == 60
    # The requested labels cycle over the 5 classes: 12 of the 60 ask for class 2, which the judge always answers
    # (of the first 12 alone, 2 would).
    assert figures["conditional_accuracy"] == pytest.approx(12 / 60)
    assert figures["fcd_train_test"] == 1.0
    # Each FCD is the mean over FCD_DRAWS random draws of 12 of the generated images (as many as the real ones): not
    # the FCD of all 60 at once, whose smaller sampling error would not compare with a floor of 12 against 12.
    generated, _ = generate(generator, 60, classes, seed=3)
    features = judge.features(generated)
    assert figures["fcd_draws"] == FCD_DRAWS
    assert figures["fcd"] == pytest.approx(mean_fcd(features, quality.test_fit, 12, seed=3))
    assert figures["val_fcd"] == pytest.approx(mean_fcd(features, quality.val_fit, 12, seed=3))
    assert figures["fcd"] != pytest.approx(frechet_distance(fit_gaussian(features), quality.test_fit))
    assert figures["fcd"] != pytest.approx(figures["val_fcd"])
    # What a run selects on: all 60 generated images against all the training images read, in one estimate.
    assert figures["train_fcd"] == pytest.approx(frechet_distance(fit_gaussian(features), quality.train_fit))
    # Fewer requested accuracy samples than the FCD pool takes: the accuracy still uses the requested number.
    fewer = replace(quality, accuracy_samples=30).evaluate(generator)
    assert (fewer["conditional_accuracy_samples"], fewer["fcd_draws"]) == (30, FCD_DRAWS)
    assert fewer["conditional_accuracy"] == pytest.approx(6 / 30) and fewer["fcd"] == pytest.approx(figures["fcd"])


def test_an_fcd_estimate_is_the_mean_over_random_draws_from_a_bounded_pool():
    from visionlake.evaluate.generative import (FCD_DRAWS, FCD_GENERATED_POOL, FCD_POOL_IMAGES, fcd_draws,
                                                generated_pool, mean_fcd)

    assert fcd_draws(129, 728) == FCD_DRAWS and fcd_draws(129, 129) == 1  # no choice: one draw, of everything
    assert generated_pool(129) == FCD_GENERATED_POOL * 129                  # the demo: a few times n ...
    assert generated_pool(10_000) == FCD_POOL_IMAGES                        # ... MNIST: within the bound ...
    assert generated_pool(30_000) == 30_000                                 # ... and never fewer than n
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 3))
    reference = fit_gaussian(rng.normal(size=(50, 3)) + 0.5)
    draws = np.random.default_rng(9)
    assert mean_fcd(features, reference, 20, seed=9) == pytest.approx(np.mean(
        [frechet_distance(fit_gaussian(features[draws.choice(200, 20, replace=False)]), reference)
         for _ in range(FCD_DRAWS)]))
    assert mean_fcd(features[:20], reference, 20, seed=9) == pytest.approx(
        frechet_distance(fit_gaussian(features[:20]), reference))
    # The point of the draws: two pools of the same distribution agree far better than two single draws do.
    spread = [mean_fcd(rng.normal(size=(200, 3)), reference, 20, seed=k) for k in range(20)]
    single = [frechet_distance(fit_gaussian(rng.normal(size=(20, 3))), reference) for _ in range(20)]
    assert np.std(spread) < 0.6 * np.std(single)


def test_a_gan_run_reports_the_figures_of_the_epoch_it_kept():
    from visionlake.train.generative import GAN_SELECTION, selected_figures

    history = [{"epoch": 0, "d_loss": 1.0}, {"epoch": 1, "d_loss": 0.9, "train_fcd": 40.0, "fcd": 41.0},
               {"epoch": 2, "d_loss": 0.8}, {"epoch": 3, "d_loss": 0.7, "train_fcd": 20.0, "fcd": 25.0},
               {"epoch": 4, "d_loss": 0.6, "train_fcd": 20.0, "fcd": 19.0},
               {"epoch": 5, "d_loss": 0.5, "train_fcd": 30.0, "fcd": 31.0}]
    # The first of the lowest FCDs against the training images, as the rank loop kept it (a tie does not replace
    # the weights).
    assert selected_figures(history, GAN_SELECTION) == {"d_loss": 0.7, "train_fcd": 20.0, "fcd": 25.0,
                                                        "selected_epoch": 4.0}
    assert selected_figures(history, None) == {}
    assert selected_figures([{"epoch": 0, "d_loss": 1.0}], GAN_SELECTION) == {}


def test_every_epoch_is_judged_for_selection_and_a_new_lowest_gets_all_its_figures():
    from visionlake.evaluate.generative import JudgedSample
    from visionlake.train.generative import GAN_SELECTION, judged_figures, selected_figures

    class Quality:  # the full figures: what GanQuality.figures adds to the selection figure
        def figures(self, sample):
            return {"fcd": 2 * sample.train_fcd, "train_fcd": sample.train_fcd}

    def sample(train_fcd):
        return JudgedSample(np.zeros(2), np.zeros((2, 3)), np.zeros(2), True, train_fcd)

    history, lowest = [], math.inf
    for epoch, (train_fcd, due) in enumerate([(50.0, False), (40.0, True), (30.0, False), (35.0, False),
                                              (30.0, False), (32.0, True)]):
        history.append({"epoch": epoch, **judged_figures(Quality(), sample(train_fcd), due, lowest)})
        lowest = min(lowest, train_fcd)
    assert [sorted(record) for record in history] == [["epoch", "fcd", "train_fcd"]] * 3 + [
        ["epoch", "train_fcd"]] * 2 + [["epoch", "fcd", "train_fcd"]]  # a tie is no new lowest
    assert selected_figures(history, GAN_SELECTION) == {"fcd": 60.0, "train_fcd": 30.0, "selected_epoch": 3.0}


def test_the_judge_sees_images_in_0_1_and_labels_each_image_across_prediction_batches():
    import tensorflow as tf

    from visionlake.evaluate.generative import PREDICT_BATCH

    judge = _judge_that_always_answers(3, shape=(8, 8, 1), classes=4)
    images = np.linspace(-1, 1, (PREDICT_BATCH + 3) * 64, dtype=np.float32).reshape(-1, 8, 8, 1)
    features, predicted = judge.features_and_labels(images)
    assert features.shape == (PREDICT_BATCH + 3, 128) and predicted.tolist() == [3] * (PREDICT_BATCH + 3)
    # Images come in [-1, 1] and reach the classifier in [0, 1]: all -1 is what the classifier sees as all 0.
    classifier_features = tf.keras.Model(judge.classifier.inputs, judge.classifier.get_layer("features").output)
    np.testing.assert_allclose(judge.features(np.full((1, 8, 8, 1), -1.0, np.float32)),
                               classifier_features(np.zeros((1, 8, 8, 1), np.float32)).numpy(), atol=1e-6)


def test_odd_image_sides_are_refused_with_advice():
    from visionlake.models.generative import geometry

    with pytest.raises(ValueError, match="even sides"):
        geometry((27, 27, 1))
    assert geometry((28, 28, 1)).start == (7, 7) and geometry((64, 64, 3)).upsamplings == 4


def test_frechet_distance_matches_the_closed_form_for_known_gaussians():
    # For 2 x 2 covariances, Tr((S_a S_b)^1/2) is the sum of the square roots of the two eigenvalues of S_a S_b:
    # sqrt(Tr(S_a S_b) + 2 sqrt(det S_a det S_b)). Here S_a S_b = [[2, 4], [1, 8]] (trace 10), det 3 and det 4.
    a = Gaussian(np.array([0.0, 0.0]), np.array([[2.0, 1.0], [1.0, 2.0]]), 10)
    b = Gaussian(np.array([1.0, -2.0]), np.array([[1.0, 0.0], [0.0, 4.0]]), 10)
    expected = (1 + 4) + 4.0 + 5.0 - 2 * math.sqrt(10.0 + 2 * math.sqrt(3.0 * 4.0))
    assert frechet_distance(a, b) == pytest.approx(expected, abs=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, abs=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_features_distance_fits_the_mean_and_unbiased_covariance_of_each_set():
    square = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # mean 0, covariance (n - 1 = 3): 2/3 I
    gaussian = fit_gaussian(square)
    assert gaussian.count == 4 and gaussian.mean.tolist() == [0.0, 0.0]
    np.testing.assert_allclose(gaussian.covariance, np.eye(2) * 2 / 3)
    # 2 x square + (3, 0): mean (3, 0), covariance 8/3 I; per axis 2/3 + 8/3 - 2 sqrt(16/9) = 2/3
    assert frechet_features_distance(square, 2 * square + [3.0, 0.0]) == pytest.approx(9 + 2 * 2 / 3, abs=1e-9)


def test_frechet_distance_survives_singular_covariances():
    features = np.zeros((50, 4))
    features[:, 0] = np.arange(50)  # rank-one covariance
    gaussian = fit_gaussian(features)
    variance = np.var(np.arange(50), ddof=1)  # 212.5
    assert frechet_distance(gaussian, gaussian) == pytest.approx(0.0, abs=1e-6)
    shifted = fit_gaussian(features + [0.0, 3.0, 0.0, 4.0])  # same covariance, mean moved by 5
    assert frechet_distance(gaussian, shifted) == pytest.approx(25.0, abs=1e-6)
    across = fit_gaussian(features[:, [1, 0, 2, 3]])  # rank one along another axis: S_a S_b = 0
    assert frechet_distance(gaussian, across) == pytest.approx(2 * variance + 2 * 24.5 ** 2, abs=1e-6)
    # Fewer feature vectors than dimensions (a small FCD sample): rank 5 of 16, eigenvalues at rounding noise.
    few = fit_gaussian(np.random.default_rng(0).normal(size=(6, 16)))
    moved = Gaussian(few.mean + np.eye(16)[0] * 3.0, few.covariance, few.count)
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(few, moved) == pytest.approx(9.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        fit_gaussian(features[:1])


def test_pixel_helpers():
    assert to_uint8(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    assert per_image_mse(np.zeros((2, 2, 2, 1)), np.ones((2, 2, 2, 1))).tolist() == [1.0, 1.0]
    grid = image_grid(np.full((3, 2, 2, 1), 255, np.uint8), columns=2)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 1) and grid[1, 1, 0] == 255 and grid[0, 0, 0] == 128


def test_generation_tasks_cover_every_class_once_with_distinct_seeds():
    tasks = plan_tasks(num_classes=3, per_class=250, batch_size=100, seed=1)
    for label in range(3):
        mine = [t for t in tasks if t.label == label]
        assert [(t.first_index, t.count) for t in mine] == [(0, 100), (100, 100), (200, 50)]
    assert len({t.seed for t in tasks}) == len(tasks)
    assert all(0 <= t.seed < 2 ** 56 for t in tasks)  # a Spark LongType, never negative
    # A task's noise seed depends on (seed, label, first index) only, the same in every process and release: the
    # same request draws the same images, which is what find_existing relies on. Recorded values, so a change shows.
    assert [t.seed for t in tasks if t.label < 2] == [23211332731351019, 60648902160444422, 2996161528549537,
                                                      40867409821747104, 63052110129585680, 19686801686017423]
    assert task_seed(1, 1, 100) == 63052110129585680
    larger = plan_tasks(num_classes=5, per_class=400, batch_size=100, seed=1)
    assert {(t.label, t.first_index, t.seed) for t in tasks} <= {(t.label, t.first_index, t.seed) for t in larger}
    assert {t.seed for t in plan_tasks(3, 250, 100, seed=2)}.isdisjoint(t.seed for t in tasks)


def test_a_synthetic_run_is_recorded_and_the_same_request_is_found_again():
    manifest = a_manifest(version=3, live_runs=("r1",), runs=({"run_id": "r1"},),
                          tables={"images": "/lake/demo/images"})
    request = GenerationRequest("visionlake-cdcgan", "2", 10, 0, 256)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    section = with_synthetic_run(manifest, "r2", request, "mlrun", {"a": 10, "b": 10}, now)
    assert section["live_runs"] == ["r2"] and section["counts"] == {"a": 10, "b": 10}
    updated = dataclasses.replace(manifest, synthetic=section)
    again = with_synthetic_run(updated, "r3", GenerationRequest("visionlake-cdcgan", "2", 10, 1, 256), "ml2",
                               {"a": 10, "b": 10}, now)
    assert again["live_runs"] == ["r2", "r3"] and again["counts"] == {"a": 20, "b": 20}
    assert find_existing(updated, request)["run_id"] == "r2"
    assert find_existing(updated, GenerationRequest("visionlake-cdcgan", "3", 10, 0, 256)) is None
    assert find_existing(updated, GenerationRequest("visionlake-cdcgan", "2", 10, 0, 128)) is None  # other noise
    assert manifest.version == 3 and manifest.synthetic is None  # the input is not modified


@pytest.mark.parametrize("reference, parsed", [
    ("visionlake-cdcgan", ("visionlake-cdcgan", "champion", None)),
    ("visionlake-cdcgan@candidate", ("visionlake-cdcgan", "candidate", None)),
    ("models:/visionlake-cdcgan/3", ("visionlake-cdcgan", None, "3")),
    ("models:/visionlake-classifier@champion", ("visionlake-classifier", "champion", None)),
])
def test_model_references(reference, parsed):
    assert parse_model_reference(reference) == parsed


@pytest.mark.parametrize("reference", ["", "@champion", "name/latest", "name@"])
def test_malformed_model_references_are_refused(reference):
    with pytest.raises(ValueError, match="name@alias"):
        parse_model_reference(reference)


def test_tanh_images_map_to_unit_pixels():
    from visionlake.evaluate.measures import to_unit

    assert to_unit(np.array([-1.0, -0.5, 0.0, 1.0])).tolist() == [0.0, 0.25, 0.5, 1.0]
    assert to_unit(np.zeros(2, np.float64)).dtype == np.float32


def _label_painter(num_classes: int, latent_dim: int = 8, conditional: bool = True):
    """A generator that draws every image of label k as the grey level k / (num_classes - 1) in [-1, 1] (and an
    unconditional one that draws mid-grey), whatever the noise."""
    import tensorflow as tf

    latent = tf.keras.Input((latent_dim,), name="latent")
    if not conditional:
        image = tf.keras.layers.Lambda(lambda z: tf.zeros((tf.shape(z)[0], 4, 4, 1)))(latent)
        return tf.keras.Model(latent, image)
    label = tf.keras.Input((1,), dtype=tf.int32, name="label")
    grey = tf.keras.layers.Lambda(lambda l: tf.cast(l, tf.float32) / (num_classes - 1) * 2.0 - 1.0)(label)
    image = tf.keras.layers.Lambda(lambda g: tf.tile(tf.reshape(g, (-1, 1, 1, 1)), (1, 4, 4, 1)))(grey)
    return tf.keras.Model([latent, label], image)


def test_latent_size_and_conditioning_are_read_from_the_network_inputs():
    from visionlake.models.generative import build_autoencoder, build_generator, is_conditional, latent_size

    gan = GanConfig(latent_dim=12, filters=8, embedding_dim=4)
    assert latent_size(build_generator((8, 8, 1), gan)) == 12 and not is_conditional(build_generator((8, 8, 1), gan))
    assert latent_size(build_generator((8, 8, 1), gan, num_classes=3)) == 12
    assert is_conditional(build_generator((8, 8, 1), gan, num_classes=3))
    assert latent_size(build_autoencoder((8, 8, 1), AutoencoderConfig(latent_dim=5, filters=8), False).decoder) == 5


def test_a_conditional_sample_grid_has_one_row_per_class():
    from visionlake.evaluate.generative import GRID_COLUMNS, gan_grid

    expected = np.full((3 * 5 + 1, GRID_COLUMNS * 5 + 1, 1), 128, np.uint8)  # 4 x 4 tiles, 1-pixel grey borders
    for row, grey in enumerate((0, 128, 255)):  # labels 0, 1, 2 are drawn at -1, 0, 1
        for column in range(GRID_COLUMNS):
            expected[1 + row * 5:5 + row * 5, 1 + column * 5:5 + column * 5] = grey
    np.testing.assert_array_equal(gan_grid(_label_painter(3), num_classes=3, seed=1), expected)
    unconditional = gan_grid(_label_painter(3, conditional=False), num_classes=3, seed=1)
    np.testing.assert_array_equal(unconditional, np.full((8 * 5 + 1, 8 * 5 + 1, 1), 128, np.uint8))  # 8 x 8


def test_kl_divergence_of_a_diagonal_gaussian_from_the_standard_normal():
    from visionlake.evaluate.generative import kl_divergence

    mean = np.array([[0.0, 0.0], [1.0, 2.0]], np.float32)
    log_var = np.array([[0.0, 0.0], [0.0, math.log(4.0)]], np.float32)
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1 - log s^2) / 2 per dimension: 0; (0 + 1) / 2 + (4 + 4 - 1 - log 4) / 2
    np.testing.assert_allclose(kl_divergence(mean, log_var).numpy(), [0.0, 4.0 - math.log(2.0)], rtol=1e-6)


def test_prior_samples_decode_seeded_standard_normal_latents():
    import tensorflow as tf

    from visionlake.evaluate.generative import sample_prior

    latent = tf.keras.Input((4,))
    identity = tf.keras.Model(latent, tf.keras.layers.Reshape((2, 2, 1))(latent))  # the image is the latent
    samples = sample_prior(identity, 3000, seed=5)
    assert samples.shape == (3000, 2, 2, 1)
    np.testing.assert_array_equal(sample_prior(identity, 3000, seed=5), samples)
    assert not np.array_equal(sample_prior(identity, 3000, seed=6), samples)
    assert abs(samples.mean()) < 0.05 and abs(samples.std() - 1.0) < 0.05


def test_a_grid_is_written_as_a_png_of_its_pixels(tmp_path):
    from visionlake.evaluate.generative import write_png
    from visionlake.lake.images import decode_stored_image

    grid = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    write_png(grid, tmp_path / "grid.png")
    np.testing.assert_array_equal(decode_stored_image((tmp_path / "grid.png").read_bytes()), grid)


def test_the_gan_scorer_encoder_maps_images_to_latents_without_batch_norm():
    import tensorflow as tf

    from visionlake.models.generative import build_encoder

    encoder = build_encoder((8, 8, 1), filters=8, latent_dim=6)
    assert encoder(np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 6)
    assert not [layer for layer in encoder.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]


def test_critic_features_are_the_discriminator_s_flattened_features():
    from visionlake.models.generative import build_discriminator, critic_features

    discriminator = build_discriminator((8, 8, 1), GanConfig(latent_dim=8, filters=8))
    flatten = [layer for layer in discriminator.layers if layer.name.startswith("flatten")][-1]
    critic = critic_features(discriminator)
    assert critic.inputs[0] is discriminator.inputs[0] and critic.outputs[0] is flatten.output
    assert critic(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, flatten.output.shape[-1])


def _image_file(path, greys, labels=None) -> str:
    """A lake-like Parquet file of 4 x 4 grey images (one grey level each), returned as a file: URI."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from visionlake.lake.images import encode_png

    images = [encode_png(np.full((4, 4, 1), grey, np.uint8), 1) for grey in greys]
    labels = labels or [0] * len(greys)
    pq.write_table(pa.table({"id": [f"{i:04d}" for i in range(len(greys))], "label": pa.array(labels, pa.int32()),
                             "image": images}), path)
    return f"file:{path}"


def test_reconstruction_quality_reads_up_to_the_requested_test_images_in_file_order_as_tanh(tmp_path):
    from visionlake.evaluate.generative import ReconstructionQuality
    from visionlake.lake.reader import InputSpec

    test = _image_file(tmp_path / "test.parquet", [0, 51, 102, 153, 204, 255])
    # The arrow reader, which both stacks have (what is tested here is what is done with the images read).
    quality = ReconstructionQuality.prepare(InputSpec((4, 4, 1), batch_size=2, reader="arrow"), (test,), samples=4,
                                            seed=9)
    assert quality.seed == 9 and quality.test_images.shape == (4, 4, 4, 1)
    np.testing.assert_allclose(quality.test_images[:, 0, 0, 0], [-1.0, -0.6, -0.2, 0.2], atol=1e-6)


def test_gan_quality_measures_fcd_on_as_many_images_as_the_test_split_gives(tmp_path):
    from visionlake.evaluate.generative import GanQuality, mean_fcd, read_images
    from visionlake.lake.reader import InputSpec

    judge = _judge_that_always_answers(1, shape=(4, 4, 1), classes=2)
    spec = InputSpec((4, 4, 1), batch_size=2, reader="arrow")
    test = _image_file(tmp_path / "test.parquet", [0, 60, 120, 250])
    train = _image_file(tmp_path / "train.parquet", [0, 60, 120, 250, 30, 90, 200, 10])
    one = _image_file(tmp_path / "one.parquet", [9])
    quality = GanQuality.prepare(judge, spec, (test,), (test,), (test,), samples=50, num_classes=2, seed=4)
    assert (quality.samples, quality.accuracy_samples, quality.num_classes, quality.seed) == (4, 50, 2, 4)
    np.testing.assert_allclose(quality.test_fit.mean, judge.features(read_images(spec, (test,), 50)[0]).mean(axis=0),
                               rtol=1e-5)
    assert quality.floor_fcd == pytest.approx(0.0, abs=1e-6)  # train = test: no distance between real sets
    # The floor is the mean FCD of random draws of 4 of all the training images read (eight here) against the test fit.
    drawn = GanQuality.prepare(judge, spec, (test,), (train,), (test,), samples=50, num_classes=2, seed=4)
    train_features = judge.features(read_images(spec, (train,), 8)[0])
    assert drawn.floor_fcd == pytest.approx(mean_fcd(train_features, quality.test_fit, 4, seed=4))
    np.testing.assert_allclose(drawn.train_fit.mean, train_features.mean(axis=0), rtol=1e-5)
    assert GanQuality.prepare(judge, spec, (test,), (test,), (one,), 50, 2, 4).val_fit is None  # one val image
    with pytest.raises(ValueError, match="at least two test images"):
        GanQuality.prepare(judge, spec, (one,), (test,), (test,), 50, 2, 4)


def test_recomputed_batch_norm_statistics_are_those_of_the_batches_under_the_current_weights():
    from tensorflow import keras

    from visionlake.models.batch_norm import batch_norm_layers, recompute_statistics

    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    model = keras.Sequential([keras.Input((4,)), inner, keras.layers.BatchNormalization(center=False, scale=False)])
    images = np.random.default_rng(0).normal(3.0, 2.0, size=(256, 4)).astype(np.float32)
    model(images[:16], training=True)  # one step's update: the moving statistics still hold 99% of their start
    dense, inner_norm, outer_norm = inner.layers[0], inner.layers[1], model.layers[1]
    assert set(batch_norm_layers(model)) == {inner_norm, outer_norm}  # nested models included
    before = inner_norm.moving_variance.numpy()
    assert recompute_statistics(model, images[:0]) == 0
    np.testing.assert_array_equal(inner_norm.moving_variance.numpy(), before)

    assert recompute_statistics(model, images, batch_size=16) == 16
    features = dense(images).numpy()
    np.testing.assert_allclose(inner_norm.moving_mean.numpy(), features.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inner_norm.moving_variance.numpy(), features.var(axis=0), rtol=0.1)
    # Inference now normalises as one batch of everything does in training mode, to the last layer.
    np.testing.assert_allclose(model(images, training=False).numpy(), model(images, training=True).numpy(), rtol=0.1,
                               atol=0.02)
    assert [layer.momentum for layer in (inner_norm, outer_norm)] == [0.99, 0.99]
