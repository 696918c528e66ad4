"""Fake per-study task and study generators for the batch tests (no tests here).

The fake task stands in for `covseg.api.infer` with the same call signature and contract:

- A study is a file named ``*.nii.gz`` holding JSON ``{"lung_ml": L, "infection_ml": I}`` (the bytes
  are not NIfTI; discovery goes by name and the fake reads the JSON). A file holding ``BROKEN``
  makes it raise `InputError` naming the file, as infer does for an unreadable study; one holding
  ``CRASH`` ends its process at once (os._exit), as the out-of-memory killer would.
- It writes out_dir atomically (temporary folder beside it, renamed; an existing folder only with
  overwrite=True): report.json in schema covseg.report/1 with volumes derived from L and I (so the
  expected table is known), and a small labels.nii.gz placeholder listed under "outputs".
- Every call that runs leaves a marker file in $COVSEG_FAKE_CALLS (``<key>.<random>``), so tests
  count how often each study was computed. With $COVSEG_FAKE_KILL_AFTER=k, the call that finds k
  markers already present kills its own process with SIGKILL before doing anything (a kill -9 in
  the middle of a batch, deterministic); $COVSEG_FAKE_INTERRUPT_AFTER=k raises KeyboardInterrupt
  instead (Ctrl-C). $COVSEG_FAKE_DELAY_S sleeps inside each call.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from covseg.errors import InputError, OutputError


def _report(path: str, spec: dict[str, float], series_uid: str | None, threads: int | None) -> dict[str, Any]:
    lung, infection = float(spec["lung_ml"]), float(spec["infection_ml"])
    left = infection / 4.0
    return {
        "schema": "covseg.report/1", "covseg_version": "test", "created": "2020-01-01T00:00:00",
        "input": {"path": path, "format": "nifti", "series_instance_uid": series_uid, "patient": None,
                  "study_date": None, "modality": "CT", "slices": 4, "warnings": []},
        "models": [{"name": "fake-lung", "version": "1.0.0", "sha256": "a" * 64, "provider": "none", "seconds": 0.0},
                   {"name": "fake-infection", "version": "1.0.0", "sha256": "b" * 64, "provider": "none",
                    "seconds": 0.0}],
        "runtime": {"device": "cpu", "threads": 1, "overlap": 0.5, "tta": False, "peak_memory_mb": 1,
                    "seconds": {"read": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0,
                                "write": 0.0, "total": 0.0}},
        "structures": {"lung_left": {"volume_ml": lung / 2, "mean_hu": -800.0},
                       "lung_right": {"volume_ml": lung / 2, "mean_hu": -790.0},
                       "liver": {"volume_ml": None, "mean_hu": None}},
        "infection": {"volume_ml": infection, "percent_of_lungs": 100.0 * infection / lung,
                      "by_lung": {"lung_left": {"volume_ml": left, "percent": 100.0 * left / (lung / 2)},
                                  "lung_right": {"volume_ml": infection - left,
                                                 "percent": 100.0 * (infection - left) / (lung / 2)}},
                      "ground_glass_ml": infection * 0.75, "consolidation_ml": infection * 0.25,
                      "consolidation_threshold_hu": -300, "mean_hu": -550.0, "lesion_count": 3,
                      "min_lesion_ml": 0.0, "by_lobe": None, "ct_severity_score": None},
        "reasons": {"liver.volume_ml": "liver model not run", "infection.by_lobe": "no lobe model"},
        "outputs": {"labels": "labels.nii.gz", "seg": None, "preview": None},
    }


def _count_and_maybe_die(out_dir: str) -> None:
    calls = os.environ.get("COVSEG_FAKE_CALLS")
    if not calls:
        return
    folder = Path(calls)
    kill_after = os.environ.get("COVSEG_FAKE_KILL_AFTER")
    if kill_after is not None and len(list(folder.iterdir())) >= int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)
    interrupt_after = os.environ.get("COVSEG_FAKE_INTERRUPT_AFTER")
    if interrupt_after is not None and len(list(folder.iterdir())) >= int(interrupt_after):
        raise KeyboardInterrupt
    (folder / f"{Path(out_dir).name}.{uuid.uuid4().hex}").write_text("call")


def fake_task(path: str, out_dir: str, *, series_uid: str | None = None, overwrite: bool = False,
              threads: int | None = None, **options: Any) -> dict[str, Any]:
    """See the module docstring."""
    _count_and_maybe_die(out_dir)
    time.sleep(float(os.environ.get("COVSEG_FAKE_DELAY_S", "0")))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from error
    if "CRASH" in text:  # the worker process dies, as under the out-of-memory killer
        os._exit(3)
    if "BROKEN" in text:
        raise InputError(f"{path}: not a CT volume (fake broken study)")
    report = _report(path, json.loads(text), series_uid, threads)
    target = Path(out_dir)
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists")
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    temp.mkdir(parents=True)
    (temp / "report.json").write_text(json.dumps(report), encoding="utf-8")
    (temp / "labels.nii.gz").write_bytes(b"labels")
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
        target.replace(old)
        temp.replace(target)
        shutil.rmtree(old)
    else:
        temp.replace(target)
    return report


def make_studies(root: Path, count: int, broken: tuple[int, ...] = ()) -> list[Path]:
    """`count` fake studies case_00.nii.gz ...; study i has lung 4000 + 10 i ml and infection 20 (i + 1) ml."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = root / f"case_{index:02d}.nii.gz"
        content = "BROKEN" if index in broken else json.dumps({"lung_ml": 4000 + 10 * index,
                                                                  "infection_ml": 20 * (index + 1)})
        path.write_text(content, encoding="utf-8")
        paths.append(path)
    return paths


def write_list(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "patient_id", "study_date"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def fake_env(calls: Path, **extra: str) -> dict[str, str]:
    calls.mkdir(parents=True, exist_ok=True)
    return {"COVSEG_FAKE_CALLS": str(calls), **extra}


def calls_per_key(calls: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for marker in calls.iterdir():
        key = marker.name.rsplit(".", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def analytic_chest(shape_zyx: tuple[int, int, int], spacing_xyz: tuple[float, float, float], *,
                   lesion_radius_mm: float) -> tuple[Any, int]:
    """A noise-free chest for the analytic ONNX test packages (tests/model_factory.py): air, a soft-tissue
    body (40 HU), two lung boxes (-850 HU) and one ground-glass ball (-500 HU) in the left lung.

    Returns (Volume, number of lesion voxels); the lesion volume in ml is that count x the voxel volume.
    """
    import numpy as np

    from covseg.engine.geometry import Geometry
    from covseg.engine.volume import StudyInfo, Volume

    nz, ny, nx = shape_zyx
    array = np.full(shape_zyx, -1000.0, dtype=np.float32)
    array[:, ny // 8: ny - ny // 8, nx // 8: nx - nx // 8] = 40.0
    z0, z1, y0, y1 = nz // 6, nz - nz // 6, ny // 4, ny - ny // 4
    right, left = (nx // 5, nx // 2 - nx // 16), (nx // 2 + nx // 16, nx - nx // 5)  # LPS: +x is patient left
    array[z0:z1, y0:y1, right[0]:right[1]] = -850.0
    array[z0:z1, y0:y1, left[0]:left[1]] = -850.0
    zz, yy, xx = np.indices(shape_zyx, dtype=np.float32)
    centre = ((z0 + z1) / 2, (y0 + y1) / 2, (left[0] + left[1]) / 2)
    distance = np.sqrt(((zz - centre[0]) * spacing_xyz[2]) ** 2 + ((yy - centre[1]) * spacing_xyz[1]) ** 2
                       + ((xx - centre[2]) * spacing_xyz[0]) ** 2)
    ball = distance <= lesion_radius_mm
    array[ball] = -500.0
    geometry = Geometry(size=(nx, ny, nz), spacing=spacing_xyz, origin=(-100.0, -100.0, -200.0))
    return Volume(array, geometry, StudyInfo(study_date="2020-04-01")), int(ball.sum())
