"""Query monitoring: stateful per-client detectors of extraction, inversion and probing attacks.

The gateway holds one :class:`Monitor` and calls ``observe(client, x, labels, probs)`` for every
answered batch; each detector that fires returns a :class:`Finding` with its statistic,
threshold, action and evidence. See docs/monitoring.md for each detector's threat model and
known evasions.

Detectors (short name -> paper):

- ``prada``: PRADA, Juuti et al., IEEE EuroS&P 2019 -- extraction;
- ``similarity``: stateful detection, Chen, Carlini & Wagner, 2020 -- inversion and black-box
  attack streams;
- ``boundary``: label flips within tiny steps -- label-only boundary probing;
- ``ood``: Mahalanobis score under the training data's probabilistic-PCA covariance;
- ``volume``: query bursts against the client's own EWMA history;
- ``copies``: near-copies of the client's own earlier queries of the same label (a radius per
  label and count of such queries), under a sequential rate test over its whole history
  (privguard's own; interleaving-resistant);
- ``lowdensity``: a budget on low-density (high Mahalanobis score) queries over the client's
  whole history (privguard's own; interleaving-resistant).

``Monitor.observe(..., account=owner)`` also keeps one state per account, so that keys sharing an
owner (sybil keys) are watched together.
"""

from privguard.gateway.monitor.base import ACTIONS, Detector, FeatureSpace, Finding
from privguard.gateway.monitor.boundary import BoundaryDetector
from privguard.gateway.monitor.copies import CopiesDetector
from privguard.gateway.monitor.lowdensity import LowDensityDetector
from privguard.gateway.monitor.monitor import DEFAULT_ACTIONS, DETECTORS, Monitor
from privguard.gateway.monitor.ood import OodDetector
from privguard.gateway.monitor.prada import PradaDetector
from privguard.gateway.monitor.similarity import SimilarityDetector
from privguard.gateway.monitor.volume import VolumeDetector

__all__ = [
    "ACTIONS",
    "DEFAULT_ACTIONS",
    "DETECTORS",
    "BoundaryDetector",
    "CopiesDetector",
    "Detector",
    "FeatureSpace",
    "Finding",
    "LowDensityDetector",
    "Monitor",
    "OodDetector",
    "PradaDetector",
    "SimilarityDetector",
    "VolumeDetector",
]
