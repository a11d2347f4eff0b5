"""Which label value stands for which vertebra: the presets of `--vertebra-labels` and explicit maps.

totalsegmentator: TotalSegmentator v2's `total` task, from `class_map["total"]` in its
totalsegmentator/map_to_binary.py (wasserth/TotalSegmentator): 26 vertebrae_S1, 27 L5 ... 31 L1, 32 T12 ...
43 T1, 44 C7 ... 50 C1 (25 is the sacrum, not a vertebra level).
verse: VerSe's numbering (anjany/verse README, utils/data_utilities.py): 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6,
28 T13 (26 sacrum and 27 coccyx are not labelled there).
"""

from __future__ import annotations

import re

from bodycomp_cli.errors import BodycompError

_CERVICAL = [f"C{i}" for i in range(1, 8)]
_THORACIC = [f"T{i}" for i in range(1, 13)]
_LUMBAR = [f"L{i}" for i in range(1, 6)]

# v2 counts from the sacrum upward: S1 26, L5 27, ..., C1 50.
TOTALSEGMENTATOR_V2 = {
    name: 26 + k for k, name in enumerate(["S1", *_LUMBAR[::-1], *_THORACIC[::-1], *_CERVICAL[::-1]])
}
VERSE = {name: 1 + k for k, name in enumerate([*_CERVICAL, *_THORACIC, *_LUMBAR, "L6"])} | {"T13": 28}
PRESETS = {"totalsegmentator": TOTALSEGMENTATOR_V2, "verse": VERSE}

_PAIR = re.compile(r"^([A-Za-z][A-Za-z0-9]*)=(\d+)$")


def parse_vertebra_labels(text: str) -> dict[str, int]:
    """`--vertebra-labels`: a preset name or LEVEL=VALUE pairs ("L3=29,L4=28"); returns {LEVEL: label value}.

    Level names are upper-cased (levels match case-insensitively). Two levels on one value are refused.
    Example: `parse_vertebra_labels("verse")["L3"]  # 22`
    """
    name = text.strip()
    if name.lower() in PRESETS:
        return dict(PRESETS[name.lower()])
    if "=" not in name:
        raise BodycompError(
            f"--vertebra-labels: unknown preset {name!r} (presets: {', '.join(PRESETS)}; or LEVEL=VALUE pairs, "
            "e.g. 'L3=29,L4=28')"
        )
    numbering: dict[str, int] = {}
    for pair in filter(None, re.split(r"[\s,]+", name)):
        match = _PAIR.match(pair)
        if match is None:
            raise BodycompError(f"--vertebra-labels: {pair!r} is not LEVEL=VALUE with a whole label value, e.g. L3=29")
        level, value = match.group(1).upper(), int(match.group(2))
        if level in numbering:
            raise BodycompError(f"--vertebra-labels: level {level} is given twice")
        if value in numbering.values():
            raise BodycompError(f"--vertebra-labels: label {value} is given to two levels")
        numbering[level] = value
    return numbering
