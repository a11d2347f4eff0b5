"""The training tasks: segmentation and slice selection (model settings, data, loss, validation metrics).

The models themselves come from engine.models' registry, which inference rebuilds runs from.
"""
