"""Where registered anomaly scorers pickled before the package's subpackages find their class.

Versions registered earlier name ``visionlake.scorers.AnomalyScorer`` in their pickle; the class now lives in
``visionlake.models.scorers``. Import nothing else from here.
"""
from visionlake.models.scorers import AnomalyScorer

__all__ = ["AnomalyScorer"]
