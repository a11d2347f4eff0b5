"""What every layer above shares: the run config, preprocessing, metrics, the slice-choice rule, AMP and workers."""
