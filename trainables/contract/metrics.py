"""The metric registry: names, directions, worst values and protocol ids of sample quality.

Torch-free, so the spec validator and the analysis read it without loading the network code;
:mod:`trainables.scoring.quality` computes the numbers under these names. Numbers are comparable only
under one evaluation protocol (feature network, reference set, sample count, seed, settings):
every result carries ``protocol_id`` of its protocol record, and ranking refuses to mix ids.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

MODES = ("min", "max")
# The ranking metric of a spec that names none, and of folders that record none.
DEFAULT_METRIC = "kid"
# Shown for results that carry no protocol id (never evaluated).
NO_PROTOCOL = "none"
# Reported beside the metrics: the spread of KID over its random subsets.
KID_STD = "kid_std"
PROTOCOL_ID = "protocol_id"

# Every metric carries a 95% interval that includes the noise of the generated sample (a bootstrap
# over the generated images against the fixed reference statistics: trainables/scoring/intervals.py),
# reported and stored as <metric>_lo and <metric>_hi beside the value.
INTERVAL_LEVEL = 0.95
CONFIRM_RESAMPLES = 2000  # bootstrap draws behind the confirmation stage's intervals and verdicts
INTERVALS = "intervals"  # the key of the interval settings in a metric record (metrics.json)
# What a paired comparison of two trials says (trainables/scoring/compare.py writes it, analysis reads it).
BETTER = "better"
WORSE = "worse"
TIED = "not distinguishable at 95%"
VERDICTS = (BETTER, WORSE, TIED)


@dataclass(frozen=True)
class MetricInfo:
    """How to read one metric: ``direction`` "min" (lower is better) or "max", and what it means."""

    direction: str
    description: str

    @property
    def worst(self) -> float:
        """The value a diverged trial reports: ``inf`` for "min" metrics, ``0.0`` for "max" ones.

        Every "max" metric here is >= 0 (the Inception Score is >= 1), so 0 ranks at or below any
        real evaluation while staying finite for JSON and Optuna.
        """
        return math.inf if self.direction == "min" else 0.0


METRICS: dict[str, MetricInfo] = {
    "fid": MetricInfo("min", "Frechet distance between Gaussian fits of sample and reference features"),
    "kid": MetricInfo("min", "kernel distance: unbiased MMD^2, cubic polynomial kernel, mean over subsets"),
    "inception_score": MetricInfo("max", "exp(E KL(p(y|x) || p(y))) with the MNIST classifier; 1..10"),
    "precision": MetricInfo("max", "fraction of samples inside the reference k-NN manifold (k=3); fidelity"),
    "recall": MetricInfo("max", "fraction of reference points inside the sample k-NN manifold (k=3); diversity"),
    "density": MetricInfo("max", "mean count of reference k-NN balls holding a sample, / k (k=5); ~1 for real"),
    "coverage": MetricInfo("max", "fraction of reference k-NN balls (k=5) that hold a sample"),
    "class_coverage": MetricInfo("max", "normalised entropy of the predicted label histogram, in [0, 1]"),
}


def metric_mode(name: str) -> str:
    """Direction of a metric in :data:`METRICS`, "min" or "max"; ``ValueError`` for an unknown name."""
    try:
        return METRICS[name].direction
    except KeyError:
        raise ValueError(f"metric={name!r}: unknown; use one of {sorted(METRICS)}") from None


def worst_value(name: str) -> float:
    """The value a diverged trial reports for metric ``name`` (see :attr:`MetricInfo.worst`)."""
    metric_mode(name)
    return METRICS[name].worst


def protocol_id(protocol: dict) -> str:
    """Short stable hash (12 hex digits) of a ``protocol`` dict; equal ids mean comparable numbers."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def lo_key(name: str) -> str:
    """Where the lower end of the 95% interval of metric ``name`` is reported: ``<name>_lo``."""
    return f"{name}_lo"


def hi_key(name: str) -> str:
    """Where the upper end of the 95% interval of metric ``name`` is reported: ``<name>_hi``."""
    return f"{name}_hi"


def interval_keys() -> tuple[str, ...]:
    """Every ``<metric>_lo`` and ``<metric>_hi`` key, in :data:`METRICS` order."""
    return tuple(key for name in METRICS for key in (lo_key(name), hi_key(name)))


# Far from digits, judged on the feature network (python -m trainables.tools.known_answers --quality,
# 1,000 images against the MNIST test set): real training digits score class coverage 1.00,
# recall 0.86, KID -0.01; digits blurred by 0.6 px still 1.00, 0.03, 1.4 (digits, and not
# flagged); blurred by 1.5 px 0.23, 0, 5.4; one digit class only 0.01; uniform noise 0, 0, 181;
# the white blobs of a CPU preview (ngf 16, 1,850 iterations) class coverage 0.12, recall 0.
FAR_FROM_DIGITS = {  # metric: (comparison, threshold, how it reads, what real digits score)
    "class_coverage": ("<", 0.5, "class coverage", "real digits 1.00"),
    "recall": ("<", 0.01, "recall", "real digits 0.86"),
    "kid": (">", 5.0, "KID", "real digits about 0, digits blurred by 1.5 px 5.4"),
}


def far_from_digits(values: dict[str, float]) -> list[str]:
    """One phrase per criterion of :data:`FAR_FROM_DIGITS` that these metric values fail (a
    metric they lack is not judged)."""
    reasons = []
    for name, (op, limit, label, real) in FAR_FROM_DIGITS.items():
        value = values.get(name)
        if value is None or math.isnan(value):
            continue
        if (op == "<" and value < limit) or (op == ">" and value > limit):
            side = "below" if op == "<" else "above"
            reasons.append(f"{label} {value:.4g} ({side} {limit:.4g}; {real})")
    return reasons
