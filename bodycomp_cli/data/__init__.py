"""Training data: validation of the two input layouts, torch datasets, samplers and augmentation."""
