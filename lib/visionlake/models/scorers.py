"""Anomaly scorers as MLflow pyfunc models with one contract: ``score(images) -> float per image``.

Images are ``(n, height, width, channels)`` floats in [0, 1] (or uint8 0..255); higher scores are more anomalous.
A scorer carries its Keras networks as artifacts, so a registered version is self-contained:

* ``autoencoder`` / ``vae``: pixel reconstruction MSE (the VAE reconstructs from the latent mean);
* ``gan`` (f-AnoGAN style): an encoder trained to invert the frozen generator; the score is the pixel residual of
  x vs G(E(x)) plus ``feature_weight`` x the residual of the discriminator's features of x vs G(E(x));
* ``classifier``: the energy -logsumexp(logits) of a classifier, an out-of-distribution score.

The threshold and the calibration summary travel with the registered version (tags and ``calibration.json``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
# predict() takes arrays and DataFrames of stored image bytes alike, so it has no type hint; MLflow warns once.
from mlflow.pyfunc import PythonModel

from visionlake.config import ConfigError

if TYPE_CHECKING:
    from visionlake.tracking import ModelRef

METHODS = ("autoencoder", "vae", "gan", "classifier")
THRESHOLD_TAG = "anomaly.threshold"
NORMAL_LABELS_TAG = "anomaly.normal_labels"  # a val AUROC only compares detectors with the same normal labels
RECONSTRUCTING = ("autoencoder", "vae", "gan")
_BATCH = 512


def as_unit_images(model_input: Any, image_shape: tuple[int, int, int]) -> np.ndarray:
    """float32 [0, 1] images from an array (uint8 or float) or a DataFrame with an ``image`` column of stored bytes."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        from visionlake.lake.images import decode_stored_image

        model_input = np.stack([decode_stored_image(png) for png in model_input["image"]]) if len(model_input) else \
            np.zeros((0, *image_shape), np.uint8)
    images = np.asarray(model_input)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    images = images.astype(np.float32, copy=False)
    if images.ndim == 3 and image_shape[2] == 1:
        images = images[..., None]
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"expected images of shape {tuple(image_shape)}, got {tuple(images.shape[1:])}")
    return images


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp(logits): low for inputs the classifier is confident about, high for unfamiliar ones."""
    logits = np.asarray(logits, np.float64)
    peak = logits.max(axis=1, keepdims=True)
    return -(peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1)))


class AnomalyScorer(PythonModel):
    def __init__(self, method: str, image_shape: tuple[int, int, int], feature_weight: float = 1.0):
        if method not in METHODS:
            raise ValueError(f"unknown anomaly method {method!r}; choose one of {METHODS}")
        self.method = method
        self.image_shape = tuple(image_shape)
        self.feature_weight = feature_weight
        self.networks: dict[str, Any] = {}

    # ---- MLflow pyfunc -----------------------------------------------------------------------------------------
    def load_context(self, context) -> None:
        self.load_networks({name: path for name, path in context.artifacts.items() if path.endswith(".keras")})

    def predict(self, context, model_input, params: Optional[dict[str, Any]] = None) -> np.ndarray:
        return self.score(as_unit_images(model_input, self.image_shape))

    # ---- the contract --------------------------------------------------------------------------------------------
    def load_networks(self, paths: dict[str, str]) -> "AnomalyScorer":
        import tensorflow as tf

        self.networks = {name: tf.keras.models.load_model(path, compile=False) for name, path in paths.items()}
        if self.method == "classifier":
            classifier = self.networks["classifier"]
            self.networks["logits"] = tf.keras.Model(classifier.inputs, classifier.get_layer("logits").output)
        if self.method == "gan":
            from visionlake.models.generative import critic_features

            self.networks["critic_features"] = critic_features(self.networks["discriminator"])
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        images = as_unit_images(images, self.image_shape)
        scores = [self._score_batch(images[start:start + _BATCH]) for start in range(0, len(images), _BATCH)]
        return np.concatenate(scores) if scores else np.zeros((0,), np.float64)

    def reconstruct(self, images: np.ndarray) -> Optional[np.ndarray]:
        """[0, 1] reconstructions, or None for a scorer that does not reconstruct."""
        if self.method not in RECONSTRUCTING:
            return None
        images = as_unit_images(images, self.image_shape)
        return (self._reconstruct_tanh(images * 2.0 - 1.0) + 1.0) / 2.0

    def anomaly_map(self, images: np.ndarray) -> Optional[np.ndarray]:
        """Per-pixel |x - reconstruction| averaged over channels, in [0, 1]; None when the scorer has no map."""
        reconstructed = self.reconstruct(images)
        if reconstructed is None:
            return None
        return np.abs(as_unit_images(images, self.image_shape) - reconstructed).mean(axis=-1)

    # ---- per method ----------------------------------------------------------------------------------------------
    def _reconstruct_tanh(self, images_tanh: np.ndarray) -> np.ndarray:
        if self.method in ("autoencoder", "vae"):
            return self.networks["autoencoder"](images_tanh, training=False).numpy()
        latent = self.networks["encoder"](images_tanh, training=False)
        return self.networks["generator"](latent, training=False).numpy()

    def _score_batch(self, images: np.ndarray) -> np.ndarray:
        if self.method == "classifier":
            return energy(self.networks["logits"](images, training=False).numpy())
        images_tanh = images * 2.0 - 1.0
        reconstructed = self._reconstruct_tanh(images_tanh)
        pixel = ((images_tanh - reconstructed) ** 2).reshape(len(images), -1).mean(axis=1) / 4.0  # [0, 1] scale
        if self.method != "gan":
            return pixel.astype(np.float64)
        critic = self.networks["critic_features"]
        features = critic(images_tanh, training=False).numpy()
        reconstructed_features = critic(reconstructed, training=False).numpy()
        feature = ((features - reconstructed_features) ** 2).mean(axis=1)
        return (pixel + self.feature_weight * feature).astype(np.float64)


def anomaly_map_png(difference: np.ndarray) -> bytes:
    """A grey PNG of one per-pixel difference map (brighter = larger difference)."""
    from visionlake.lake.images import encode_png

    pixels = np.clip(np.rint(difference / max(float(difference.max()), 1e-6) * 255), 0, 255).astype(np.uint8)
    return encode_png(pixels[..., None], 6)


def load_scorer(model_uri: str) -> AnomalyScorer:
    """The registered scorer, ready to ``score``."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()


def threshold_of(model: "ModelRef") -> float:
    """The calibrated threshold stored with a registered anomaly model.

    Raises:
        ConfigError: the version has no threshold (not a calibrated visionlake detector).
    """
    from mlflow.tracking import MlflowClient

    tags = MlflowClient().get_model_version(model.name, model.version).tags
    if THRESHOLD_TAG not in tags:
        raise ConfigError(f"{model.uri} has no {THRESHOLD_TAG} tag: not a calibrated anomaly detector; train one with "
                          "`visionlake train anomaly`")
    return float(tags[THRESHOLD_TAG])
