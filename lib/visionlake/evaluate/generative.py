"""Quality of generative models, measured with TensorFlow on one process (rank 0 during training, or a notebook).

* ``Judge``: a registered classifier seen as a feature extractor (its "features" layer) and a labeller; the
  Fréchet Classifier Distance (FCD) is the Fréchet distance between Gaussian fits of its features.
* ``GanQuality``: FCD of generated vs real test images next to the real-vs-real floor FCD(train, test), the
  conditional accuracy of a cDCGAN, and the sample grid (fixed noise; one row per class when conditional). Every FCD
  compares n images with the n real test images (n: all of them, at most ``samples``), so that the model's FCD and
  the floor carry the same small-sample bias; and each is the mean over ``FCD_DRAWS`` random draws of n from a pool
  (the generated images, or all the real training images read for the floor). Every draw is a sample of n from the
  pool's distribution, so the mean estimates the FCD of one sample of n with a fraction of its spread: with one demo
  judge, one draw of 129 training images gave floors from 1.9 to 44 (sd 6.4, mean 11.4), the mean of five disjoint
  draws 7.0 to 19.3 (sd 2.7), the mean of 30 draws 10.0 to 12.9 (sd 1.0).
  ``val_fcd`` is the same figure against the validation split. ``train_fcd`` compares all the generated images
  with all the training images read for the floor (the FID of the GAN literature, which compares with the training
  set): the largest samples on both sides, so the least noisy figure, and what a run selects its generator on, so
  that the test FCD of the selected generator stays an unbiased estimate. On the demo the validation split was a
  poor choice: its 143 images are not the classes' mix of the 129 test ones (one class 22 against 34), and selecting
  on it kept epochs at 2.0-2.5x the floor when later ones were at 1.1-1.5x. The conditional accuracy needs no real
  images and uses all ``samples`` generated ones (on the demo's 129 test images alone it would be +-0.035).
* ``ReconstructionQuality``: test reconstruction MSE and SSIM (on [0, 1] pixels), the VAE's KL term, and a grid of
  originals, reconstructions and (VAE) samples from the prior.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from visionlake.lake.reader import InputSpec, open_images
from visionlake.lake.shards import whole
from visionlake.evaluate.measures import (Gaussian, conditional_accuracy, fit_gaussian, frechet_distance, image_grid,
                                          per_image_mse, to_uint8, to_unit)

PREDICT_BATCH = 500
GRID_COLUMNS = 10
FCD_DRAWS = 30                 # random draws of n images averaged per FCD estimate, out of a pool of ...
FCD_POOL_IMAGES = 20_000       # ... at most this many real training images (the floor; at least n) ...
FCD_GENERATED_POOL = 5         # ... or this many times n generated images (within the same bound)


class Judge:
    """A registered classifier (inputs in [0, 1]) used to judge images given in [-1, 1]."""

    def __init__(self, classifier):
        import tensorflow as tf

        self.classifier = classifier
        self.extractor = tf.keras.Model(classifier.inputs, [classifier.get_layer("features").output,
                                                            classifier.outputs[0]])

    @classmethod
    def load(cls, model_uri: str) -> "Judge":
        import mlflow.tensorflow

        return cls(mlflow.tensorflow.load_model(model_uri))

    def features_and_labels(self, images_tanh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, predicted = [], []
        for start in range(0, len(images_tanh), PREDICT_BATCH):
            batch_features, outputs = self.extractor(to_unit(images_tanh[start:start + PREDICT_BATCH]),
                                                     training=False)
            features.append(batch_features.numpy().reshape(len(batch_features), -1))
            predicted.append(np.argmax(outputs.numpy(), axis=-1))
        return np.concatenate(features), np.concatenate(predicted)

    def features(self, images_tanh: np.ndarray) -> np.ndarray:
        return self.features_and_labels(images_tanh)[0]


def read_images(spec: InputSpec, files: tuple[str, ...], limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` images in [-1, 1] and their labels, in file order (no shuffling, no augmentation)."""
    images, labels, count = [], [], 0
    with open_images(replace(spec, scale="tanh"), whole(files), training=False) as batches:
        for batch_images, batch_labels in batches:
            images.append(batch_images.numpy())
            labels.append(batch_labels.numpy())
            count += len(batch_labels)
            if count >= limit:
                break
    if not images:
        return np.zeros((0, *spec.image_shape), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def generate(generator, count: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images from a (conditional) generator with labels cycling over the classes; labels are -1 for an
    unconditional generator."""
    import tensorflow as tf

    from visionlake.models.generative import is_conditional, latent_size

    noise = tf.random.Generator.from_seed(seed)
    conditional = is_conditional(generator)
    labels = (np.arange(count) % num_classes).astype(np.int32) if conditional else np.full(count, -1, np.int32)
    images = []
    for start in range(0, count, PREDICT_BATCH):
        batch_labels = labels[start:start + PREDICT_BATCH]
        latent = noise.normal([len(batch_labels), latent_size(generator)])
        # Keras 3 refuses a call whose inputs mix tensors and arrays: both are tensors, on either stack.
        inputs = [latent, tf.constant(batch_labels[:, None])] if conditional else latent
        images.append(generator(inputs, training=False).numpy())
    return np.concatenate(images), labels


def fcd_draws(size: int, available: int) -> int:
    """How many draws of ``size`` an FCD estimate averages out of ``available`` rows: one when there is no choice."""
    return FCD_DRAWS if available > size else 1


def generated_pool(size: int) -> int:
    """How many generated images an FCD estimate draws from: a few times ``size``, within ``FCD_POOL_IMAGES``."""
    return max(size, min(FCD_GENERATED_POOL * size, FCD_POOL_IMAGES))


def mean_fcd(features: np.ndarray, reference, size: int, seed: int) -> float:
    """The mean FCD against the ``reference`` Gaussian of ``fcd_draws`` random draws of ``size`` feature rows (each
    without replacement, independent of the others), or the FCD of all the rows when there are no more."""
    draws = fcd_draws(size, len(features))
    if draws == 1:
        return frechet_distance(fit_gaussian(features), reference)
    rng = np.random.default_rng(seed)
    return float(np.mean([frechet_distance(fit_gaussian(features[rng.choice(len(features), size, replace=False)]),
                                           reference) for _ in range(draws)]))


@dataclass
class GanQuality:
    """Prepared once per run on rank 0: the judge, the real test and validation fits and the real-vs-real floor."""
    judge: Judge
    test_fit: Gaussian
    train_fit: Gaussian          # all the training images read for the floor
    val_fit: Optional[Gaussian]  # None when the validation split has fewer than two images
    floor_fcd: float
    samples: int           # n: images per FCD draw, the real test images read (at most the requested number)
    num_classes: int
    seed: int
    accuracy_samples: int  # generated images per conditional accuracy estimate: the requested number

    @classmethod
    def prepare(cls, judge: Judge, spec: InputSpec, test_files: tuple[str, ...], train_files: tuple[str, ...],
                val_files: tuple[str, ...], samples: int, num_classes: int, seed: int) -> "GanQuality":
        test_images, _ = read_images(spec, test_files, samples)
        if len(test_images) < 2:
            raise ValueError("FCD needs at least two test images; the dataset's test split is empty")
        count = len(test_images)  # the same sample size for every FCD of the run
        test_fit = fit_gaussian(judge.features(test_images))
        train_images, _ = read_images(spec, train_files, max(count, FCD_POOL_IMAGES))
        train_features = judge.features(train_images)
        floor = mean_fcd(train_features, test_fit, count, seed)
        val_images, _ = read_images(spec, val_files, count)
        val_fit = fit_gaussian(judge.features(val_images)) if len(val_images) >= 2 else None
        return cls(judge, test_fit, fit_gaussian(train_features), val_fit, floor, count, num_classes, seed, samples)

    def evaluate(self, generator) -> dict[str, float]:
        return self.figures(self.sample(generator))

    def sample(self, generator) -> "JudgedSample":
        """The generator's images seen by the judge, and their FCD against the training images (the selection
        figure, so the cheap part: one estimate on features every figure needs anyway)."""
        from visionlake.models.generative import is_conditional

        conditional = is_conditional(generator)
        count = max(self.accuracy_samples if conditional else 0, generated_pool(self.samples))
        images, labels = generate(generator, count, self.num_classes, self.seed)
        features, predicted = self.judge.features_and_labels(images)
        return JudgedSample(labels, features, predicted, conditional,
                            frechet_distance(fit_gaussian(features), self.train_fit))

    def figures(self, sample: "JudgedSample") -> dict[str, float]:
        # Each draw mixes the classes at random, as a draw of real training images does for the floor.
        features, labels, predicted = sample.features, sample.labels, sample.predicted
        figures = {"fcd": mean_fcd(features, self.test_fit, self.samples, self.seed),
                   "fcd_train_test": self.floor_fcd, "fcd_samples": float(self.samples),
                   "fcd_draws": float(fcd_draws(self.samples, len(features))), "train_fcd": sample.train_fcd}
        if self.val_fit is not None:
            figures["val_fcd"] = mean_fcd(features, self.val_fit, self.samples, self.seed)
        if sample.conditional:  # on the requested number of images, however large the FCD pool
            figures["conditional_accuracy"] = conditional_accuracy(labels[:self.accuracy_samples],
                                                                   predicted[:self.accuracy_samples])
            figures["conditional_accuracy_samples"] = float(min(len(labels), self.accuracy_samples))
        return figures


@dataclass(frozen=True)
class JudgedSample:
    labels: np.ndarray     # the conditioning labels (-1 for an unconditional generator)
    features: np.ndarray   # the judge's features of each generated image
    predicted: np.ndarray  # the judge's label for each
    conditional: bool
    train_fcd: float       # FCD of all of them against all the training images read for the floor


def gan_grid(generator, num_classes: int, seed: int) -> np.ndarray:
    """Fixed noise: one row per class (conditional) or an 8 x 8 grid."""
    from visionlake.models.generative import is_conditional

    count = num_classes * GRID_COLUMNS if is_conditional(generator) else 64
    images, _ = generate(generator, count, num_classes, seed)
    if is_conditional(generator):  # generate() cycles labels; regroup so that each row is one class
        order = np.argsort(np.arange(count) % num_classes, kind="stable")
        images = images[order]
    return image_grid(to_uint8(images), GRID_COLUMNS if is_conditional(generator) else 8)


@dataclass
class ReconstructionQuality:
    test_images: np.ndarray  # [-1, 1]
    seed: int

    @classmethod
    def prepare(cls, spec: InputSpec, test_files: tuple[str, ...], samples: int, seed: int) -> "ReconstructionQuality":
        images, _ = read_images(spec, test_files, samples)
        return cls(images, seed)

    def evaluate(self, autoencoder) -> dict[str, float]:
        """autoencoder: ``generative_models.Autoencoder``. MSE and SSIM on [0, 1] pixels."""
        import tensorflow as tf

        if not len(self.test_images):
            return {}
        reconstructions, kls = [], []
        for start in range(0, len(self.test_images), PREDICT_BATCH):
            batch = self.test_images[start:start + PREDICT_BATCH]
            code = autoencoder.encoder(batch, training=False)
            mean = code[0] if autoencoder.variational else code
            reconstructions.append(autoencoder.decoder(mean, training=False).numpy())
            if autoencoder.variational:
                kls.append(kl_divergence(code[0], code[1]).numpy())
        original, reconstructed = to_unit(self.test_images), to_unit(np.concatenate(reconstructions))
        figures = {"test_mse": float(per_image_mse(original, reconstructed).mean()),
                   "test_ssim": float(tf.reduce_mean(tf.image.ssim(original, reconstructed, max_val=1.0)))}
        if kls:
            figures["test_kl"] = float(np.concatenate(kls).mean())
        return figures

    def grid(self, autoencoder, columns: int = GRID_COLUMNS) -> np.ndarray:
        """Rows: originals, reconstructions and, for a VAE, samples from the prior."""
        originals = self.test_images[:columns]
        code = autoencoder.encoder(originals, training=False)
        rows = [originals, autoencoder.decoder(code[0] if autoencoder.variational else code, training=False).numpy()]
        if autoencoder.variational:
            rows.append(sample_prior(autoencoder.decoder, columns, self.seed))
        return image_grid(to_uint8(np.concatenate(rows)), len(originals))


def kl_divergence(z_mean, z_log_var):
    """Per-image KL(q(z|x) || N(0, I)), summed over the latent dimensions."""
    import tensorflow as tf

    return -0.5 * tf.reduce_sum(1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=-1)


def sample_prior(decoder, count: int, seed: int) -> np.ndarray:
    """Images decoded from N(0, I) latents: how a VAE generates."""
    import tensorflow as tf

    from visionlake.models.generative import latent_size

    latent = tf.random.Generator.from_seed(seed).normal([count, latent_size(decoder)])
    return decoder(latent, training=False).numpy()


def decoder_of(registered_autoencoder):
    """The decoder inside a registered VAE/autoencoder (for sampling); None if the model has none."""
    try:
        return registered_autoencoder.get_layer("decoder")
    except ValueError:
        return None


def write_png(grid: np.ndarray, path) -> None:
    from visionlake.lake.images import encode_png

    with open(path, "wb") as handle:
        handle.write(encode_png(grid, 6))
