"""Batch throughput: studies per hour with 1 and 2 workers on this machine -> docs/benchmarks/batch.md.

Studies: analytic phantom chests (tests/test_batch_support.py `analytic_chest`, sample-sized grid by
default) written as DICOM series, plus optionally copies of the real chest CT
../shared/data/lungdx_a0001_chest_ct/series2_5mm_kernel_L (--real). Models: the shipped packages when
the registry has any, else the analytic test packages of tests/model_factory.py (lung, infection,
liver), which cost almost nothing to run, so the figure is then the engine's overhead (read,
preprocess, postprocess, quantify, write) rather than network time. The table says which.

Run: nice python benchmarks/batch.py [--studies 6] [--real 4] [--out docs/benchmarks/batch.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
SPACING = (1.9, 1.9, 4.5)  # the sample study's grid (covseg sample defaults: 192x192x64 voxels)
REAL = REPO.parent / "shared" / "data" / "lungdx_a0001_chest_ct" / "series2_5mm_kernel_L"


NOTES = """## How `covseg batch` works (what the numbers include)

- **Work unit and key.** Each DICOM series (grouped by the reader's own header scan), each NIfTI/NRRD/MHA
  file and each series inside a zip is a study, written to `DIR/studies/<key>/` exactly as `covseg infer`
  writes it. DICOM key: `dicom-` + 20 hex digits of sha256(SeriesInstanceUID) (moving or copying the data
  keeps it); file key: `file-` + 20 hex digits of sha256(resolved path) (not the name, which may identify
  the patient; keys appear in folder names and logs). The same UID given twice
  (two copies passed as inputs) gets a path-hash suffix on every member, so keys stay unique and depend
  only on the inputs.
- **Resume.** After the task has written the study folder (atomically), `done.json` is written
  atomically with the input fingerprint, the settings fingerprint (models resolved by the registry to
  name, version and verified sha256; overlap, TTA, label format, anonymisation, covseg version) and the
  sha256 of `report.json`. `--resume` skips a study only when all three match and every output the report
  lists exists; otherwise it recomputes. Before recomputing, the old `done.json` is removed, so a kill at
  any moment leaves a valid record for complete outputs or none. The input fingerprint hashes names, sizes
  and mtimes, not content: a content hash would read the whole data set again on every resume; the cost
  of a copy without preserved mtimes is a recomputation, never a wrong skip.
- **Failures** go to `failed.json` (one line) and a `failed` row; the batch continues and exits 8.
  Non-CT series (PET, SEG) are `skipped` rows with the reason. A worker process that dies fails only
  the studies it held ("rerun with --resume").
- **Tables** (`summary.csv`, `summary.parquet` with pyarrow, `longitudinal.csv`, `summary.png`) are
  rebuilt from the records at the end of every run (and every 5 minutes during long runs), each written
  to a temporary file and renamed. Patient ids are infer's salted pseudonyms (`anon-` + 16 hex;
  `COVSEG_PSEUDONYM_SALT`), the same in every shard and report, unless `--keep-identifiers`;
  `--anonymize` also leaves paths, file names and dates out (follow-ups keep their day intervals).
- **Scale-out.** `--shard K/N` keeps the studies with `sha256(key) mod N = K-1` (stable under any input
  order, for SLURM/Kubernetes job arrays: every shard discovers the same studies and runs its part).
  A shard writes its tables to `DIR/shard-K-of-N/`, so the tasks of an array may share one `DIR`;
  `covseg batch-merge DIR... --out M` unions the shard tables found in the folders (a study present
  twice keeps its best row), e.g. `covseg batch-merge DIR --out DIR`.
  `--backend dask` runs the same per-study function on Dask distributed (`--scheduler ADDRESS`, or a
  LocalCluster of `--workers` single-threaded workers). Dask rather than Ray: Dask is pure Python, already in
  the `batch` extra, and uses the concurrent.futures idiom of the local backend, so nothing else changes;
  dask-jobqueue and dask-kubernetes start the same cluster on HPC and Kubernetes. Ray brings a C++ runtime
  and an object store that one-task-per-study work does not need. Workers need the inputs and `DIR` at
  the same paths (a shared file system).
- **Local parallelism.** `--workers N` runs a spawn process pool (fork would copy ONNX Runtime's thread
  pools mid-state); threads per worker default to (and are capped at) cores / N.
"""


def models(folder: Path) -> tuple[list[str], str]:
    """Model package folders to run and a sentence saying which they are."""
    from covseg.engine.registry import list_packages

    try:
        shipped = list_packages()
    except Exception:
        shipped = []
    if shipped:
        names = ", ".join(f"{p.name} {p.version}" for p in shipped)
        return [str(p.path) for p in shipped], f"shipped packages ({names})"
    from model_factory import make_package

    paths = [str(make_package(folder, "lung", spacing_mm=(3.0, 3.0, 3.0), patch=(32, 64, 64)))]
    paths += [str(make_package(folder, kind, spacing_mm=SPACING, patch=(32, 96, 96)))
              for kind in ("infection", "liver")]
    return paths, ("analytic test packages of tests/model_factory.py (HU-band ONNX graphs, no trained package "
                   "exists yet): lung at 3 mm, patch 32x64x64; infection and liver at 1.9x1.9x4.5 mm, patch "
                   "32x96x96; so the figures are the engine's own cost (read, resample, sliding window "
                   "bookkeeping, postprocess, quantify, write NIfTI/SEG/preview), not network time")


def phantom_studies(folder: Path, count: int, size_xyz: tuple[int, int, int]) -> str:
    """`count` phantom chests as DICOM series; returns how they were made."""
    from covseg.training.synthesis.dicom_series import write_dicom_series

    try:
        from covseg.training.synthesis.config import PhantomConfig
        from covseg.training.synthesis.phantom import make_phantom
    except ImportError:
        make_phantom = None
    for index in range(count):
        if make_phantom is not None:
            image = make_phantom(PhantomConfig(seed=index, size_xyz=size_xyz, spacing_xyz=SPACING)).image
        else:
            from test_batch_support import analytic_chest

            image, _ = analytic_chest(size_xyz[::-1], SPACING, lesion_radius_mm=10.0 + 2 * index)
        write_dicom_series(image, folder / f"study_{index:02d}", uid_seed=f"bench-{index}")
    return "procedural phantom (covseg.training.synthesis)" if make_phantom is not None else "analytic chest"


def real_studies(folder: Path, count: int) -> list[Path]:
    """Copies of one series, each passed as its own input: the reader groups one input folder by UID, so
    copies under one folder would be one series with duplicate slices; as separate inputs they are
    separate studies whose keys get a path suffix."""
    copies = [folder / f"copy_{index:02d}" for index in range(count)]
    for copy in copies:
        shutil.copytree(REAL, copy)
    return copies


def measure(inputs: list[Path], out: Path, workers: int, model_paths: list[str]) -> dict[str, Any]:
    from covseg.engine.batch import BatchOptions, run_batch

    options = BatchOptions(out=out, workers=workers, plot=False,
                           infer_options={"model_paths": tuple(model_paths), "device": "cpu", "overlap": 0.5})
    start = time.perf_counter()
    result = run_batch([str(p) for p in inputs], options)
    wall = time.perf_counter() - start
    ok = result.count("ok")
    errors = sorted({f"{r['status']}: {r['error']}" for r in result.rows if r.get("status") != "ok"})
    per_study = [float(r["runtime.seconds.total"]) for r in result.rows
                 if isinstance(r.get("runtime.seconds.total"), int | float)]
    return {"workers": workers, "threads": result.threads_per_worker, "studies": len(result.rows), "ok": ok,
            "wall_s": wall, "per_hour": 3600.0 * ok / wall if ok else 0.0,
            "mean_study_s": sum(per_study) / len(per_study) if per_study else float("nan"), "errors": errors}


def table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"### {title}", "",
             "| workers | threads/worker | studies (ok) | wall s | studies/hour | mean infer s/study |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['threads']} | {r['studies']} ({r['ok']}) | {r['wall_s']:.1f} | "
                     f"{r['per_hour']:.0f} | {r['mean_study_s']:.2f} |")
    if len(rows) == 2 and rows[0]["per_hour"]:
        lines.append(f"\n2 workers vs 1: {rows[1]['per_hour'] / rows[0]['per_hour']:.2f}x the studies per hour.")
    for r in rows:
        for error in r["errors"]:
            lines.append(f"\nnot ok with {r['workers']} worker(s): `{error}`")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--size", type=int, nargs=3, default=(192, 192, 64), metavar=("X", "Y", "Z"))
    parser.add_argument("--real", type=int, default=0, help="copies of the real chest CT to run (0: skip)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "batch.md")
    args = parser.parse_args()
    from covseg.engine.batch.runner import available_cores

    load = os.getloadavg()[0]

    sections: list[str] = []
    with tempfile.TemporaryDirectory(prefix="covseg-bench-batch-") as temp:
        root = Path(temp)
        model_paths, which = models(root / "models")
        made = phantom_studies(root / "phantoms", args.studies, tuple(args.size))
        rows = [measure([root / "phantoms"], root / f"out{w}", w, model_paths) for w in (1, 2)]
        size = "x".join(str(s) for s in args.size)
        sections += table(f"Sample-sized studies: {args.studies} DICOM series of the {made}, {size} voxels, "
                          "1.9x1.9x4.5 mm", rows)
        if args.real and REAL.is_dir():
            copies = real_studies(root / "real", args.real)
            rows = [measure(copies, root / f"real{w}", w, model_paths) for w in (1, 2)]
            sections += table(f"Real chest CT (lungdx_a0001 series 2, 512x512x64, {args.real} copies)", rows)
    header = [
        "# Batch throughput (`covseg batch`)", "",
        "Written by `benchmarks/batch.py`; rerun it to refresh. Studies per hour = completed studies / wall time "
        "of the whole batch (discovery, resume check, every study, summary tables), measured on "
        f"{available_cores()} cores ({platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}), local backend, `--device cpu`, threads per worker = cores / workers. "
        f"The machine is shared (1-minute load average {load:.1f} when the run started); other jobs on its "
        "cores lower the figures, so compare rows of one run (measured back to back).", "",
        "Why 2 workers help: much of a study's time (DICOM decoding, resampling, postprocessing, quantification, "
        "writing the label map, SEG and preview) runs on one thread, so two studies side by side use both cores "
        "where one study with two threads does not; the price is each worker process's start-up (spawn, imports, "
        "ONNX sessions once per worker), which only a few small studies do not amortise. "
        "`mean infer s/study` is the report's own total per study (`runtime.seconds.total`).", "",
        f"Models: {which}.", "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + sections) + "\n" + NOTES, encoding="utf-8")
    print(args.out.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
