"""The label table is consistent with DESIGN.md section 1."""

from __future__ import annotations

from covseg import labels


def test_values_and_names_match_design() -> None:
    assert labels.NAMES == {0: "background", 1: "lung_left", 2: "lung_right", 3: "infection_ground_glass",
                            4: "infection_consolidation", 5: "liver", 6: "lesion_nodule_tumour",
                            7: "lesion_pleural_effusion"}
    assert [info.value for info in labels.ENGINE_OUTPUT_LABELS] == [1, 2, 3, 4, 5]


def test_every_label_has_a_code_colour_and_unique_name() -> None:
    assert len({info.name for info in labels.LABELS}) == len(labels.LABELS)
    for info in labels.LABELS:
        assert info.code.scheme in ("SCT", "DCM") and info.code.value.isdigit()
        assert all(0 <= c <= 255 for c in info.colour)
    assert labels.label_value("liver") == 5
