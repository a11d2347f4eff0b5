"""The estimator: slice choice from per-slice predictions, measurements, QC, previews and evaluation."""
