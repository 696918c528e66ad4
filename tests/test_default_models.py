"""The default models' training sets keep their test patients out (issue 11)."""

from __future__ import annotations

from covseg.training.default_models import CHEST_LIVER_CASES, REAL_LIVER_CASES

LIVER_TEST_PATIENT = "ircad_1_17"  # the one manual liver mask: the liver model's honest test case


def test_no_liver_training_case_is_the_liver_test_patient() -> None:
    patients = {case.patient for case in REAL_LIVER_CASES + CHEST_LIVER_CASES}
    assert LIVER_TEST_PATIENT not in patients
    assert patients == {"ircad_1_1", "lungdx_a0001"}


def test_chest_liver_cases_are_whole_chest_series() -> None:
    assert CHEST_LIVER_CASES and all(case.lungs_complete for case in CHEST_LIVER_CASES)
