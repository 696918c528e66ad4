"""Model cards say what the model was trained on, from the dataset's own case list."""

from __future__ import annotations

import json
from pathlib import Path

from covseg.export.checkpoint import _described_cases
from covseg.export.model_card import render_model_card


def test_cases_json_is_grouped_by_kind_with_licences(tmp_path: Path) -> None:
    records = [{"case": "a", "source": "real CT + synthesised COVID-19 lesions", "licence": "CC BY-NC-ND 3.0"},
               {"case": "b", "source": "real CT + synthesised COVID-19 lesions", "licence": "CC BY-NC-ND 3.0"},
               {"case": "c", "source": "phantom seed 4, lesions ['covid']", "licence": "synthetic (covseg)"}]
    (tmp_path / "cases.json").write_text(json.dumps({"cases": records}))
    assert _described_cases(tmp_path) == [
        {"name": "real CT + synthesised COVID-19 lesions", "licence": "CC BY-NC-ND 3.0", "cases": 2},
        {"name": "phantom", "licence": "synthetic (covseg)", "cases": 1}]
    assert _described_cases(tmp_path / "absent") == []


def test_infection_card_says_no_real_3d_covid_ct_was_used() -> None:
    meta = {"name": "infection", "task": "infection", "classes": {"0": "background", "1": "infection"},
            "provenance": {"training_data": [{"name": "real CT + synthesised COVID-19 lesions", "cases": 8}]}}
    card = render_model_card(meta)
    assert "No real labelled 3-D COVID-19 CT was used" in card
    lung = render_model_card({**meta, "task": "lung"})
    assert "COVID-19 CT was used" not in lung and "synthetic phantoms only" not in lung
    phantom_only = render_model_card({**meta, "task": "liver", "provenance": {
        "training_data": [{"name": "covseg phantom", "licence": "synthetic (covseg)", "cases": 9}]}})
    assert "Trained on synthetic phantoms only" in phantom_only
