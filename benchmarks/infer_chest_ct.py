"""End-to-end `covseg infer` on the real chest CT: wall time and peak memory per stage, 2 CPU cores.

Issue target: lung + infection on a 512x512x~250 chest CT in at most 20 s and 3 GB on 2 cores.
There is no LIDC-IDRI-0314 here (../shared/data/README.md); the real chest CT is lungdx_a0001
series 2 (512x512x64 at 5 mm). It is measured as it is, and resampled to 1.25 mm slices
(linear in z, 512x512x253) to stand in for a thin-slice scan of the target's size.

Each run is a subprocess (`covseg infer --progress json`); its resident memory, children
included, is sampled every 20 ms and attributed to the stage covseg reports at that moment.
Writes docs/benchmarks/infer_chest_ct.md.

    python benchmarks/infer_chest_ct.py [--models lung,infection] [--model PKG ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SERIES = SHARED / "lungdx_a0001_chest_ct" / "series2_5mm_kernel_L"


def resample_slices(source: Path, target: Path, slice_mm: float) -> tuple[int, int, int]:
    """Write the series resampled to `slice_mm` slices (in-plane grid unchanged) as NIfTI."""
    from covseg.engine.reading import read_study

    volume = read_study(source)
    image = sitk.GetImageFromArray(volume.array)
    volume.geometry.apply_to_sitk(image)
    size = list(image.GetSize())
    extent = (size[2] - 1) * image.GetSpacing()[2]
    new_size = [size[0], size[1], round(extent / slice_mm) + 1]
    resampled = sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                              (*image.GetSpacing()[:2], slice_mm), image.GetDirection(), -1024.0, sitk.sitkFloat32)
    sitk.WriteImage(sitk.Cast(sitk.Round(resampled), sitk.sitkInt16), str(target))
    return tuple(new_size)  # type: ignore[return-value]


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def run_once(study: Path, out: Path, model_args: list[str]) -> dict[str, object]:
    command = [sys.executable, "-m", "covseg", "infer", str(study), "--out", str(out), "--progress", "json",
               "--overwrite", *model_args]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    stage = {"name": "start"}
    peaks: dict[str, int] = {}

    def sample() -> None:
        while child.poll() is None:
            rss = _tree_rss(process)
            peaks[stage["name"]] = max(peaks.get(stage["name"], 0), rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("{"):
            stage["name"] = json.loads(line).get("stage", stage["name"])
    returncode = child.wait()
    wall = time.perf_counter() - started
    sampler.join()
    if returncode != 0:
        raise SystemExit(f"covseg infer failed ({returncode}): {child.stderr.read() if child.stderr else ''}")
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": wall, "peak_mb": {k: v / 2**20 for k, v in peaks.items()}, "report": report}


def _row(name: str, size: tuple[int, ...], runs: list[dict[str, object]]) -> list[str]:
    report = runs[-1]["report"]
    seconds = {k: statistics.median(r["report"]["runtime"]["seconds"][k] for r in runs)  # type: ignore[index]
               for k in report["runtime"]["seconds"]}  # type: ignore[index]
    peak = max(max(r["peak_mb"].values()) for r in runs)  # type: ignore[union-attr]
    wall = statistics.median(r["wall_s"] for r in runs)  # type: ignore[misc]
    structures = report["structures"]  # type: ignore[index]
    infection = report["infection"]  # type: ignore[index]

    def ml(block: dict[str, object] | None) -> str:
        value = (block or {}).get("volume_ml")
        return "n/a" if value is None else f"{value:.0f}"

    stages = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items() if k != "total")
    return [name, "x".join(map(str, size)), f"{wall:.1f}", f"{seconds['total']:.1f}", stages, f"{peak:.0f}",
            ml(structures.get("lung_left")), ml(structures.get("lung_right")),
            "n/a" if infection.get("volume_ml") is None else f"{infection['volume_ml']:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lung,infection")
    parser.add_argument("--model", action="append", default=[], help="model package folder (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "infer_chest_ct.md")
    args = parser.parse_args()
    model_args = [arg for path in args.model for arg in ("--model", path)] or ["--models", args.models]
    rows = []
    per_stage_peaks: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="covseg-bench-") as folder:
        work = Path(folder)
        thin = work / "lungdx_s2_1p25mm.nii.gz"
        thin_size = resample_slices(SERIES, thin, 1.25)
        for name, study, size in (("lungdx_a0001 s2, original 5 mm", SERIES, (512, 512, 64)),
                                  ("lungdx_a0001 s2, resampled to 1.25 mm", thin, thin_size)):
            runs = [run_once(study, work / f"out{i}", model_args) for i in range(args.repeats)]
            rows.append(_row(name, size, runs))
            per_stage_peaks[name] = {k: max(r["peak_mb"].get(k, 0.0) for r in runs)  # type: ignore[union-attr]
                                     for k in runs[0]["peak_mb"]}  # type: ignore[union-attr]
            models = runs[-1]["report"]["models"]  # type: ignore[index]
    header = ["input", "size", "wall s (median)", "covseg total s", "stage seconds", "peak RSS MB",
              "left lung mL", "right lung mL", "infection mL"]
    lines = [
        "# `covseg infer` on the real chest CT (2 CPU cores)", "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/infer_chest_ct.py` ({args.repeats} runs each; "
        "wall time includes interpreter start-up and writing all outputs).", "",
        "Models: " + ", ".join(f"{m['name']} {m['version']} ({m['provider']})" for m in models), "",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
        *["| " + " | ".join(row) + " |" for row in rows], "",
        "Peak resident memory by stage (MB, process tree):", "",
    ]
    for name, peaks in per_stage_peaks.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    lines += ["", "Target (issue): lung + infection on 512x512x~250 in at most 20 s and 3 GB on 2 cores. "
              "No LIDC-IDRI-0314 exists here; the 1.25 mm input is series 2 of lungdx_a0001 resampled "
              "in z (the original has 5 mm slices)."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
