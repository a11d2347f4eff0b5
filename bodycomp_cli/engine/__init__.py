"""The one shared trainer: devices, AMP, checkpoints, history, curves, resume, DDP."""
