"""Synthetic chest/abdomen/pelvis CT with known vertebral levels and tissue labels (numpy + scipy only)."""

from bodycomp_cli.phantoms.anatomy import LEVELS, THORACIC_LEVELS, Spine
from bodycomp_cli.phantoms.render import RenderedSlice, SeriesRenderer
from bodycomp_cli.phantoms.variation import SeriesParams, sample_series
from bodycomp_cli.phantoms.writer import PhantomSet, generate_phantoms, series_params

__all__ = [
    "LEVELS",
    "THORACIC_LEVELS",
    "PhantomSet",
    "RenderedSlice",
    "SeriesParams",
    "SeriesRenderer",
    "Spine",
    "generate_phantoms",
    "sample_series",
    "series_params",
]
