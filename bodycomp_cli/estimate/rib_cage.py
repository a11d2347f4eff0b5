"""Does every slice of a series lie inside the rib cage? Then the scan holds no vertebra below T12, whatever a
selection model reads there.

This is the one presence test that reads the pixels rather than a model. A model trained on phantoms read a
real 38 mm chest series at T11/T12 (../shared/realct) as L3, with every reading it gives (issue 24), and a
reader of axial CT would not: there the ribs ring the trunk on both sides on every slice. Once L3 was ruled out
that way, the same models put L1 on the series' top slice.

A slice shows the rib cage when, inside the trunk, its bone (>= 200 HU) outside the vertebra falls into at least
four small pieces on each side of the spine, spread around the trunk so that no gap between them spans more than 120
degrees seen from its centre. On that real series every slice holds 6-11 pieces a side with gaps of 48-94 degrees.
On the real abdomen no slice from T12 down passes: below the xiphoid the ring opens in front (gaps of 134 degrees or
more at T12 and L1), and from L1's centre to L5's it stays open by 168 degrees or more, though the iliac crests give
up to 7 pieces a side. Pelvic slices can hold as many pieces (the hip bones in parts, phleboliths, noise), but they
cluster: gaps of 110-343 degrees. Only every slice of a series can pass, so an abdomen or pelvis that reaches a
rib-free slice never does. A series that holds a vertebra's centre has its last slice at or below it, and the last
slice is always read: so where no slice from L1's centre down can pass, a series inside the cage holds no L1 and
nothing below it. The lowest ribs (on L1 when there are 13 pairs) and the costal margin (down to L2-L3) reach that
far only at the sides and the back, never as the whole ring.

Metal breaks the rule: the streaks from pedicle screws cut the bone of a phantom's L3 slice into ten pieces a
side around the trunk. A slice holding metal (metal.holds_metal) is therefore never read as inside
the rib cage, and a series with metal on a sampled slice keeps what the model reads.

Phantom thoracic slices pass (their ribs and the speckle of the heart's wall give enough pieces); no phantom
slice from L1's centre down does, with any variant, 13 rib pairs included (tests/test_rib_cage.py).

Where it fails: a person whose costal cartilages close the ring in front down to L1 would have a present L1
called absent in a series that ends there; none of the CT we hold does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bodycomp_cli.core.vertebrae import spine_index
from bodycomp_cli.estimate.metal import holds_metal

BONE_HU = 200.0
BODY_HU = -300.0  # the trunk: soft tissue and bone, not air or the table's foam
PIECE_AREA_MM2 = (30.0, 1000.0)  # a rib's or a costal cartilage's cross-section; smaller is noise or a phlebolith
SPINE_CLEARANCE_MM = 45.0  # pieces this close to the vertebra are its own processes, not ribs
PIECES_PER_SIDE = 4
LARGEST_GAP_DEG = 120.0
LOWEST_LEVEL_IN_CAGE = "T12"  # a series inside the rib cage holds no level below this one
SAMPLED_SLICES = 16  # a long series is read at this many slices, evenly spaced, both ends included


@dataclass(frozen=True)
class RibPieces:
    """The small bone pieces of a slice outside its vertebra: how many lie on each side of the spine, the widest
    angle between neighbouring pieces seen from the trunk's centre (360 with fewer than two), and whether the
    slice holds metal (whose streaks make pieces of their own)."""

    left: int
    right: int
    largest_gap_deg: float
    metal: bool = False

    @property
    def rib_cage(self) -> bool:
        if self.metal:
            return False
        return min(self.left, self.right) >= PIECES_PER_SIDE and self.largest_gap_deg <= LARGEST_GAP_DEG


def rib_pieces(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> RibPieces:
    """The pieces of one axial slice (HU, rows x columns) that shows_rib_cage counts.

    Example: rib_pieces(volume.hu[0], volume.pixel_spacing).left
    """
    hu = np.asarray(hu)
    if holds_metal(hu, pixel_spacing):
        return RibPieces(0, 0, 360.0, metal=True)
    trunk = _trunk(hu > BODY_HU)
    if trunk is None:
        return RibPieces(0, 0, 360.0)
    bone = (hu >= BONE_HU) & trunk
    pieces, count = ndimage.label(bone)
    if count < 2:
        return RibPieces(0, 0, 360.0)
    index = np.arange(1, count + 1)
    areas = np.asarray(ndimage.sum(bone, pieces, index)) * pixel_spacing[0] * pixel_spacing[1]
    centres = np.asarray(ndimage.center_of_mass(bone, pieces, index))
    spine_row, spine_col = centres[int(np.argmax(areas))]  # the largest piece: the vertebra
    trunk_row, trunk_col = ndimage.center_of_mass(trunk)
    low, high = PIECE_AREA_MM2
    distance = np.hypot((centres[:, 0] - spine_row) * pixel_spacing[0], (centres[:, 1] - spine_col) * pixel_spacing[1])
    ribs = centres[(areas >= low) & (areas <= high) & (distance >= SPINE_CLEARANCE_MM)]
    left = int(np.sum(ribs[:, 1] < spine_col))
    if len(ribs) < 2:
        return RibPieces(left, len(ribs) - left, 360.0)
    angles = np.sort(np.degrees(np.arctan2(ribs[:, 0] - trunk_row, ribs[:, 1] - trunk_col)) % 360.0)
    gaps = np.diff(np.append(angles, angles[0] + 360.0))
    return RibPieces(left, len(ribs) - left, round(float(gaps.max()), 1))


def shows_rib_cage(hu: np.ndarray, pixel_spacing: tuple[float, float]) -> bool:
    """Does this axial slice show the ribs around the trunk? (the module's rule)

    Example: shows_rib_cage(volume.hu[0], volume.pixel_spacing)
    """
    return rib_pieces(hu, pixel_spacing).rib_cage


def inside_rib_cage(hu_volume: np.ndarray, pixel_spacing: tuple[float, float] | None) -> bool:
    """Does every slice show the rib cage? A series of more than SAMPLED_SLICES slices is read at that many,
    evenly spaced (a slice takes about 0.1 s at 512 x 512), from the first on; it stops at the first that does
    not, which in an abdomen is at once. False without a pixel spacing (no areas in mm²).

    Example: inside_rib_cage(volume.hu, volume.pixel_spacing)
    """
    if pixel_spacing is None or len(hu_volume) == 0:
        return False
    sampled = np.unique(np.linspace(0, len(hu_volume) - 1, min(len(hu_volume), SAMPLED_SLICES)).round())
    return all(shows_rib_cage(np.asarray(hu_volume[int(k)]), pixel_spacing) for k in sampled)


def below_rib_cage(level: str) -> bool:
    """Is this a vertebra that a series inside the rib cage cannot hold (L1 and below)?"""
    index = spine_index(level)
    return index is not None and index > spine_index(LOWEST_LEVEL_IN_CAGE)  # type: ignore[operator]


def _trunk(body: np.ndarray) -> np.ndarray | None:
    """The largest connected part of the body with its holes filled (arms apart, lungs and bowel gas inside)."""
    parts, count = ndimage.label(body)
    if count == 0:
        return None
    sizes = np.bincount(parts.ravel())[1:]
    return ndimage.binary_fill_holes(parts == 1 + int(np.argmax(sizes)))
