"""Sample quality: the MNIST feature network, FID/KID and friends, their intervals and paired
comparisons.

One public entry point scores samples: :func:`trainables.scoring.intervals.evaluate` (and
``evaluate_features`` for images already embedded), every metric with its 95% interval. The
point values alone come from :func:`trainables.scoring.quality.point_metrics`, which it calls.
"""
