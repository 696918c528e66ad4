"""The one table of label values, names, colours and standard codes.

Every other module asks this table; no other file hard-codes a label value
(DESIGN.md section 1). Codes are SNOMED CT (scheme "SCT") where one exists and
DICOM (scheme "DCM") otherwise; they are what DICOM SEG and Slicer show.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True)
class Code:
    """A coded concept as DICOM writes it: (value, scheme designator, meaning)."""

    value: str
    scheme: str
    meaning: str


ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
MORPHOLOGICALLY_ABNORMAL = Code("49755003", "SCT", "Morphologically Altered Structure")


class Label(IntEnum):
    """Label values of covseg label maps (engine output and phantom ground truth)."""

    BACKGROUND = 0
    LUNG_LEFT = 1
    LUNG_RIGHT = 2
    INFECTION_GROUND_GLASS = 3
    INFECTION_CONSOLIDATION = 4
    LIVER = 5
    LESION_NODULE_TUMOUR = 6
    LESION_PLEURAL_EFFUSION = 7


@dataclass(frozen=True)
class LabelInfo:
    """What a label value means, how it is drawn and coded, and where it may appear."""

    label: Label
    name: str
    display_name: str
    colour: tuple[int, int, int]
    category: Code
    code: Code
    in_engine_output: bool

    @property
    def value(self) -> int:
        return int(self.label)


LABELS: tuple[LabelInfo, ...] = (
    LabelInfo(Label.LUNG_LEFT, "lung_left", "Left lung", (128, 174, 216), ANATOMICAL_STRUCTURE,
              Code("44029006", "SCT", "Left lung"), True),
    LabelInfo(Label.LUNG_RIGHT, "lung_right", "Right lung", (102, 199, 153), ANATOMICAL_STRUCTURE,
              Code("3341006", "SCT", "Right lung"), True),
    LabelInfo(Label.INFECTION_GROUND_GLASS, "infection_ground_glass", "Infection: ground-glass opacity",
              (250, 200, 40), MORPHOLOGICALLY_ABNORMAL, Code("112120", "DCM", "Ground glass opacity"), True),
    LabelInfo(Label.INFECTION_CONSOLIDATION, "infection_consolidation", "Infection: consolidation",
              (220, 50, 50), MORPHOLOGICALLY_ABNORMAL, Code("95436008", "SCT", "Lung consolidation"), True),
    LabelInfo(Label.LIVER, "liver", "Liver", (221, 130, 101), ANATOMICAL_STRUCTURE,
              Code("10200004", "SCT", "Liver"), True),
    LabelInfo(Label.LESION_NODULE_TUMOUR, "lesion_nodule_tumour", "Nodule or tumour", (170, 80, 200),
              MORPHOLOGICALLY_ABNORMAL, Code("27925004", "SCT", "Nodule"), False),
    LabelInfo(Label.LESION_PLEURAL_EFFUSION, "lesion_pleural_effusion", "Pleural effusion", (60, 120, 240),
              MORPHOLOGICALLY_ABNORMAL, Code("60046008", "SCT", "Pleural effusion"), False),
)

BY_NAME: dict[str, LabelInfo] = {info.name: info for info in LABELS}
BY_VALUE: dict[int, LabelInfo] = {info.value: info for info in LABELS}
NAMES: dict[int, str] = {0: "background", **{info.value: info.name for info in LABELS}}

LUNG_LABELS: tuple[Label, ...] = (Label.LUNG_LEFT, Label.LUNG_RIGHT)
INFECTION_LABELS: tuple[Label, ...] = (Label.INFECTION_GROUND_GLASS, Label.INFECTION_CONSOLIDATION)
ENGINE_OUTPUT_LABELS: tuple[LabelInfo, ...] = tuple(info for info in LABELS if info.in_engine_output)

# Infection voxels at or above this HU are consolidation, below it ground glass (DESIGN.md section 1).
DEFAULT_CONSOLIDATION_THRESHOLD_HU = -300.0


def label_value(name: str) -> int:
    """Value of a label by its name; raises KeyError naming the unknown name."""
    if name == "background":
        return 0
    try:
        return BY_NAME[name].value
    except KeyError:
        raise KeyError(f"unknown label name {name!r}; known: {', '.join(NAMES.values())}") from None
