"""Pure quality metrics for generative models (numpy only): Fréchet distance, reconstruction error, SSIM."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Gaussian:
    """A Gaussian fit of a feature set: mean and (unbiased) covariance."""
    mean: np.ndarray
    covariance: np.ndarray
    count: int


def fit_gaussian(features: np.ndarray) -> Gaussian:
    """Raises ValueError for fewer than two feature vectors (no covariance)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least two feature vectors to fit a Gaussian, got shape {features.shape}")
    return Gaussian(features.mean(axis=0), np.cov(features, rowvar=False), len(features))


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: Gaussian, b: Gaussian) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2).

    Tr((S_a S_b)^1/2) is computed as the sum of the square roots of the eigenvalues of S_a^1/2 S_b S_a^1/2, which is
    symmetric positive semi-definite: stable where the general matrix square root of S_a S_b (scipy's sqrtm, used
    by the FID reference code) returns complex noise for singular covariances.
    """
    root_a = _symmetric_sqrt(a.covariance)
    middle = root_a @ b.covariance @ root_a
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    distance = float(np.sum((a.mean - b.mean) ** 2) + np.trace(a.covariance) + np.trace(b.covariance)
                     - 2.0 * trace_sqrt)
    return max(distance, 0.0)


def frechet_features_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    return frechet_distance(fit_gaussian(features_a), fit_gaussian(features_b))


def to_unit(images: np.ndarray) -> np.ndarray:
    """[-1, 1] (tanh) images -> [0, 1]."""
    return (np.asarray(images, np.float32) + 1.0) / 2.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] (tanh) images -> 0..255 pixels."""
    return np.clip(np.rint(to_unit(images) * 255.0), 0, 255).astype(np.uint8)


def per_image_mse(original: np.ndarray, reconstructed: np.ndarray) -> np.ndarray:
    """Mean squared error per image, both in the same scale."""
    difference = np.asarray(original, np.float64) - np.asarray(reconstructed, np.float64)
    return (difference ** 2).reshape(len(difference), -1).mean(axis=1)


def conditional_accuracy(conditioning_labels: np.ndarray, predicted_labels: np.ndarray) -> float:
    conditioning_labels = np.asarray(conditioning_labels).ravel()
    return float((conditioning_labels == np.asarray(predicted_labels).ravel()).mean()) if len(conditioning_labels) \
        else float("nan")


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 images (n, h, w, c) -> one (rows*h, columns*w, c) mosaic with a 1-pixel grey border between tiles."""
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    grid = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1, channels), 128, np.uint8)
    for index, image in enumerate(images):
        top, left = 1 + (index // columns) * (height + 1), 1 + (index % columns) * (width + 1)
        grid[top:top + height, left:left + width] = image
    return grid
