"""Generative pieces without Spark: network shapes, Fréchet distance, grids, generation planning, model references."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from visionlake.config import AutoencoderConfig, GanConfig
from visionlake.evaluate.measures import (fit_gaussian, frechet_distance, frechet_features_distance, image_grid,
                                per_image_mse, to_uint8)
from visionlake.score.synthetic import GenerationRequest, find_existing, plan_tasks, with_synthetic_run
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

    def fakes():
        return generator([tf.random.Generator.from_seed(2).normal([64, 8]), labels[:, None]], training=False)

    real_before = class_loss(real)
    for _ in range(40):
        d_step(real, labels)
    fake_before = class_loss(fakes())
    for _ in range(60):
        d_step(real, labels)
        g_step(labels)
    assert class_loss(real) < 0.3 * real_before, "the class head learns the real images' classes"
    assert class_loss(fakes()) < 0.5 * fake_before, "the generator learns to draw the class it is asked for"


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
    assert with_average({**weights, AVERAGE_GENERATOR: [np.zeros(2)]})[AVERAGE_GENERATOR][0].sum() == 0


def test_conditional_accuracy_uses_every_requested_sample_and_fcd_as_many_as_the_real_images():
    from visionlake.models.generative import build_generator
    from visionlake.models.classifier import build_classifier
    from visionlake.evaluate.generative import GanQuality, Judge

    shape, classes = (32, 32, 3), 5
    judge = Judge(build_classifier("lenet", shape, classes))
    real = np.random.default_rng(0).uniform(-1, 1, (12, *shape)).astype(np.float32)
    quality = GanQuality(judge, judge.features(real), floor_fcd=1.0, samples=len(real), num_classes=classes,
                         seed=3, accuracy_samples=60)
    generator = build_generator(shape, GanConfig(latent_dim=8, filters=8, embedding_dim=4), classes)

    figures = quality.evaluate(generator)

    assert figures["fcd_samples"] == 12 and figures["conditional_accuracy_samples"] == 60
    assert figures["fcd"] > 0 and 0 <= figures["conditional_accuracy"] <= 1


def test_odd_image_sides_are_refused_with_advice():
    from visionlake.models.generative import geometry

    with pytest.raises(ValueError, match="even sides"):
        geometry((27, 27, 1))
    assert geometry((28, 28, 1)).start == (7, 7) and geometry((64, 64, 3)).upsamplings == 4


def test_frechet_distance_matches_the_closed_form_for_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(20000, 3))
    b = rng.normal(2.0, 2.0, size=(20000, 3))
    # Per dimension: (mu_a - mu_b)^2 + s_a^2 + s_b^2 - 2 s_a s_b = 4 + 1 + 4 - 4 = 5
    assert frechet_features_distance(a, b) == pytest.approx(15.0, rel=0.03)
    assert frechet_features_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_features_distance(a, b) == pytest.approx(frechet_features_distance(b, a), rel=1e-9)


def test_frechet_distance_survives_singular_covariances():
    features = np.zeros((50, 4))
    features[:, 0] = np.arange(50)  # rank-one covariance
    gaussian = fit_gaussian(features)
    assert frechet_distance(gaussian, gaussian) == pytest.approx(0.0, abs=1e-6)
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
        assert [t.first_index for t in mine] == [0, 100, 200] and sum(t.count for t in mine) == 250
    assert len({t.seed for t in tasks}) == len(tasks)
    assert plan_tasks(3, 250, 100, seed=1) == tasks and plan_tasks(3, 250, 100, seed=2) != tasks


def test_a_synthetic_run_is_a_new_version_and_the_same_request_is_found_again():
    manifest = a_manifest(version=3, live_runs=("r1",), runs=({"run_id": "r1"},),
                          tables={"images": "/lake/demo/images"})
    request = GenerationRequest("visionlake-cdcgan", "2", 10, 0, 256)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    updated = with_synthetic_run(manifest, "r2", request, "mlrun", {"a": 10, "b": 10}, now, "/lake/demo/synthetic")
    assert updated.version == 4 and updated.live_runs == ("r1", "r2")
    assert updated.tables["synthetic"] == "/lake/demo/synthetic" and updated.synthetic["counts"] == {"a": 10, "b": 10}
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
