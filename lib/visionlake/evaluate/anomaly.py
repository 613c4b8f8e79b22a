"""Pure anomaly-detection arithmetic (numpy only): AUROC, threshold calibration at a false-positive rate, summaries."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SUMMARY_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def roc_auc(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    """Area under the ROC curve of "higher score = more anomalous" (Mann-Whitney U with average ranks for ties).

    Raises:
        ValueError: only one class present (the AUROC is undefined).
    """
    scores = np.asarray(scores, np.float64).ravel()
    positive = np.asarray(is_anomaly, bool).ravel()
    positives, negatives = int(positive.sum()), int((~positive).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUROC needs both normal and anomalous examples, got {negatives} and {positives}")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties, so that a constant scorer gets exactly 0.5.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    rank_sum = ranks[positive].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


@dataclass(frozen=True)
class Calibration:
    """The threshold above which an image is flagged, and what it means on the calibration set."""
    threshold: float
    target_false_positive_rate: float
    achieved_false_positive_rate: float
    calibration_images: int
    quantiles: dict[str, float]
    mean: float
    std: float

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(normal_scores: np.ndarray, false_positive_rate: float) -> Calibration:
    """A threshold that flags at most ``false_positive_rate`` of the held-out normal images, and as many as that
    allows: the achieved rate is the largest achievable rate not above the target (it equals it up to 1 / n).

    Flagging is ``score > threshold``. The threshold lies halfway between the highest score it keeps and the lowest
    it flags, not on a calibration score: rescoring the same image elsewhere (another batch, another machine)
    moves its score by float rounding, which must not move it across the threshold.

    Raises:
        ValueError: no calibration scores, non-finite scores, or a rate outside [0, 1).
    """
    scores = np.sort(np.asarray(normal_scores, np.float64).ravel())
    if not len(scores):
        raise ValueError("threshold calibration needs held-out normal images; the validation split has none")
    if not np.isfinite(scores).all():
        raise ValueError("threshold calibration got non-finite scores; the scorer is broken")
    if not 0 <= false_positive_rate < 1:
        raise ValueError(f"the false-positive rate must be in [0, 1), got {false_positive_rate}")
    allowed = int(np.floor(false_positive_rate * len(scores)))  # images allowed above the threshold
    kept = scores[len(scores) - 1 - allowed]
    flagged = scores[scores > kept]
    threshold = float((kept + flagged[0]) / 2) if len(flagged) else float(kept)
    achieved = float((scores > threshold).mean())
    return Calibration(threshold=threshold, target_false_positive_rate=false_positive_rate,
                       achieved_false_positive_rate=achieved, calibration_images=len(scores),
                       quantiles=summarise(scores), mean=float(scores.mean()), std=float(scores.std()))


def summarise(scores: np.ndarray) -> dict[str, float]:
    scores = np.asarray(scores, np.float64).ravel()
    return {f"p{round(q * 100):02d}": float(np.quantile(scores, q)) for q in SUMMARY_QUANTILES}


def flag(scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.asarray(scores) > threshold
