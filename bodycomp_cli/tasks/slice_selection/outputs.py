"""The slice-selection CNN's inputs and outputs, read from a run's config.

Its input is the slice, or (context_mm > 0) the slice between its neighbours at z -+ context_mm as 3 channels.
Its outputs are one sigmoid unit per output level (the asked levels, and with a series head every level it was
trained on), then, in series-head runs that have them, the vertebral phase's (cos, sin).
"""

from __future__ import annotations

from bodycomp_cli.core.runconfig import RunConfig


def input_channels(config: RunConfig) -> int:
    """1, or 3 for a model fed its neighbours at -+ context_mm."""
    return 3 if config.context_mm > 0 else 1


def output_levels(config: RunConfig) -> list[str]:
    """The CNN's level outputs: `levels`, and with a series head every level it was trained on."""
    if config.series_head:
        return [str(level) for level in config.series_head.get("feature_levels") or config.levels or []]
    return list(config.levels or [])


def output_count(config: RunConfig) -> int:
    """The CNN's output units: one per output level, then (with a series head) its phase outputs."""
    return len(output_levels(config)) + int((config.series_head or {}).get("phase_outputs") or 0)


def phase_columns(config: RunConfig) -> slice | None:
    """The CNN's vertebral phase outputs (cos, sin) after its levels, or None in a run without them."""
    if not (config.series_head or {}).get("phase_outputs"):
        return None
    return slice(len(output_levels(config)), output_count(config))
