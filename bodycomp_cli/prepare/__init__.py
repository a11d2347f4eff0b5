"""Data preparation: CT series -> slice-selection PNG layout, labelled slices -> segmentation arrays."""
