"""Labels and HU ranges of the phantom tissues.

Labels follow the original toolkit's masks: 0 background, 1 muscle, 2 subcutaneous fat, 3 visceral fat
(a thoracic set has no visceral fat class: intrathoracic fat is background there).
"""

from __future__ import annotations

BACKGROUND, MUSCLE, SUBCUTANEOUS_FAT, VISCERAL_FAT = 0, 1, 2, 3
CLASS_NAMES = ("background", "muscle", "subcutaneous_fat", "visceral_fat")

# The HU windows that body-composition protocols (e.g. the Alberta protocol) use to define each tissue.
# Every labelled pixel of the clean (noise-free) phantom lies inside its tissue's window.
FAT_HU_RANGE = (-190.0, -30.0)
MUSCLE_HU_RANGE = (-29.0, 150.0)

AIR_HU = -1000.0
LUNG_HU = -850.0
GAS_HU = -900.0
FLUID_HU = 10.0
SKIN_HU = 25.0
DISC_HU = 85.0
CORTICAL_BONE_HU = 1000.0
TABLE_HU = 120.0
