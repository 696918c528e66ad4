"""Label map on the exact input grid (read back by nibabel and pynrrd), report keys, preview colours."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from PIL import Image

from covseg.engine.geometry import Geometry, xyz_to_zyx
from covseg.engine.preview import render_preview
from covseg.engine.quantify import quantify
from covseg.engine.report import ModelRun, RunSettings, build_report, pseudonym, write_report
from covseg.engine.volume import StudyInfo
from covseg.engine.write_labels import write_label_map
from covseg.labels import BY_VALUE, Label
from tests.test_infer_phantom import make_phantom

_C, _S = math.cos(math.radians(20)), math.sin(math.radians(20))
DIRECTIONS = {
    "identity": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
    "flipped": (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0),
    "permuted": (0, 0, 1.0, 1.0, 0, 0, 0, 1.0, 0),
    "oblique": (_C, -_S, 0, _S, _C, 0, 0, 0, 1.0),
}


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 6, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_nifti_label_map_lies_exactly_on_the_input_grid(tmp_path: Path, name: str) -> None:
    geometry = Geometry(size=(7, 6, 5), spacing=(0.8, 0.9, 2.5), origin=(-12.5, 30.0, 101.0),
                        direction=DIRECTIONS[name])
    labels = _labels(geometry.shape_zyx)
    path = write_label_map(labels, geometry, tmp_path / "labels.nii.gz")
    image = nib.load(path)
    assert image.get_data_dtype() == np.uint8
    assert np.allclose(image.affine, geometry.affine_ras(), atol=1e-4)
    assert np.array_equal(xyz_to_zyx(np.asarray(image.dataobj)), labels)


def test_nrrd_label_map_on_request(tmp_path: Path) -> None:
    geometry = Geometry(size=(7, 6, 5), spacing=(0.8, 0.9, 2.5), origin=(-12.5, 30.0, 101.0),
                        direction=DIRECTIONS["oblique"])
    labels = _labels(geometry.shape_zyx)
    data, header = nrrd.read(str(write_label_map(labels, geometry, tmp_path / "labels.nrrd")))
    assert header["space"] == "left-posterior-superior"
    directions = np.asarray(header["space directions"], dtype=float)  # rows: x, y, z index axes
    assert np.allclose(directions.T, geometry.direction_matrix @ np.diag(geometry.spacing), atol=1e-4)
    assert np.allclose(header["space origin"], geometry.origin, atol=1e-4)
    assert np.array_equal(xyz_to_zyx(data), labels)


def test_label_map_refuses_other_dtypes(tmp_path: Path) -> None:
    geometry = Geometry(size=(2, 2, 2), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="uint8"):
        write_label_map(np.zeros((2, 2, 2), dtype=np.int16), geometry, tmp_path / "x.nii.gz")


REPORT_KEYS = {
    "": {"schema", "covseg_version", "created", "input", "geometry", "models", "runtime", "structures",
         "infection", "reasons", "outputs"},
    "input": {"path", "format", "study_instance_uid", "series_instance_uid", "patient", "study_date", "modality",
              "slices", "warnings"},
    "geometry": {"size", "spacing_mm", "origin_mm", "direction", "frame"},
    "runtime": {"device", "threads", "overlap", "tta", "seconds", "peak_memory_mb"},
    "runtime.seconds": {"read", "preprocess", "inference", "postprocess", "write", "total"},
    "structures": {"lung_left", "lung_right", "liver"},
    "infection": {"volume_ml", "percent_of_lungs", "by_lung", "ground_glass_ml", "consolidation_ml",
                  "consolidation_threshold_hu", "mean_hu", "lesion_count", "min_lesion_ml", "by_lobe",
                  "ct_severity_score"},
    "infection.by_lung.lung_left": {"volume_ml", "percent"},
    "outputs": {"labels", "seg", "preview"},
}


def _at(report: dict, dotted: str) -> dict:
    node = report
    for part in filter(None, dotted.split(".")):
        node = node[part]
    return node


def check_report_schema(report: dict) -> None:
    """Every key of DESIGN.md section 4; every None has a reason (used by the infer tests too)."""
    assert report["schema"] == "covseg.report/1"
    for where, keys in REPORT_KEYS.items():
        assert keys <= set(_at(report, where)), f"{where or 'report'} lacks {keys - set(_at(report, where))}"
    for model in report["models"]:
        assert {"name", "version", "sha256", "provider", "seconds"} <= set(model)
    for block in ("structures", "infection"):
        for key, value in _flatten(report[block]).items():
            short = key if block == "infection" else key.removeprefix("structures.")
            if value is None:
                assert short in report["reasons"] or f"{block}.{short}" in report["reasons"], key


def _flatten(node: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _report(tmp_path: Path, **kwargs: object) -> dict:
    phantom = make_phantom()
    info = StudyInfo(format="dicom", modality="CT", patient_id="SECRET-42", patient_name="Doe^Jane",
                     study_date="2021-02-03", study_instance_uid="1.2.3", series_instance_uid="1.2.3.4")
    q = quantify(phantom.truth, phantom.volume.array, phantom.volume.geometry, ran=frozenset({"lung", "infection"}))
    return build_report(path=tmp_path / "SECRET-42_Doe", info=info, geometry=phantom.volume.geometry,
                        models=[ModelRun("lung-test", "0.0.1", "lung", "ab" * 32, "CPUExecutionProvider", 0.5)],
                        settings=RunSettings("cpu", 2, 0.5, False), seconds={"read": 1.0, "total": 2.0},
                        quantities=q, outputs={"labels": "labels.nii.gz", "seg": None, "preview": "preview.png"},
                        reasons={"outputs.seg": "input is nifti"}, **kwargs)  # type: ignore[arg-type]


def test_report_has_every_schema_key_and_pseudonym(tmp_path: Path) -> None:
    report = _report(tmp_path)
    check_report_schema(report)
    assert report["structures"]["liver"]["volume_ml"] is None
    assert report["reasons"]["liver.volume_ml"] == "liver model not run"
    assert report["input"]["patient"] == pseudonym("SECRET-42") != "SECRET-42"
    text = write_report(report, tmp_path / "report.json").read_text()
    assert "Doe" not in text.replace(str(tmp_path / "SECRET-42_Doe"), "")
    assert "SECRET-42\"" not in text


def test_report_identifiers_kept_or_withheld(tmp_path: Path) -> None:
    assert _report(tmp_path, keep_identifiers=True)["input"]["patient"] == "SECRET-42"
    anonymous = _report(tmp_path, anonymize=True)
    assert anonymous["input"]["path"] is None and anonymous["input"]["study_date"] is None
    assert "SECRET" not in str(anonymous)


def test_preview_shows_lung_window_and_label_colours(tmp_path: Path) -> None:
    phantom = make_phantom(DIRECTIONS["flipped"])
    image = render_preview(phantom.truth, phantom.volume.array, phantom.volume.geometry)
    image.save(tmp_path / "preview.png")
    pixels = np.asarray(Image.open(tmp_path / "preview.png").convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(c) for c in p) for p in np.unique(pixels, axis=0)}
    for label in (Label.LUNG_LEFT, Label.LUNG_RIGHT, Label.INFECTION_GROUND_GLASS, Label.INFECTION_CONSOLIDATION,
                  Label.LIVER):
        assert BY_VALUE[int(label)].colour in colours, label
    # Radiological convention: the patient's left lung is drawn on the image's right half (axial panel).
    size = phantom.volume.geometry.size
    axial = np.asarray(image)[20:380, 10:10 + round(360 * size[0] / size[1])]  # panel height 360, square pixels
    left_colour = np.all(axial == BY_VALUE[int(Label.LUNG_LEFT)].colour, axis=-1)
    right_colour = np.all(axial == BY_VALUE[int(Label.LUNG_RIGHT)].colour, axis=-1)
    assert np.nonzero(left_colour)[1].mean() > np.nonzero(right_colour)[1].mean()
