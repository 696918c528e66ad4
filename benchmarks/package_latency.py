"""CPU latency per window of model packages, side by side -> docs/benchmarks/package_latency.md.

    python benchmarks/package_latency.py covseg/models/lung covseg/models/lung-compact \
        covseg/models/infection runs/default_models/infection-compact [--repeats 9]

Each package runs its own input window (model.json input.patch) in ONNX Runtime, batch 1, with the
engine's thread setting (2 intra-op threads); the packages are timed round-robin, one call each per
round after a warm-up, and the median of the rounds is reported, so a load that comes and goes on a
shared machine hits every package alike. Parameters, MACs and file size come from model.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def sessions(packages: list[Path], threads: int) -> dict[Path, tuple[object, np.ndarray, dict]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    out = {}
    for package in packages:
        meta = json.loads((package / "model.json").read_text())
        session = ort.InferenceSession(str(package / meta["onnx"]["file"]), options,
                                       providers=["CPUExecutionProvider"])
        window = np.random.default_rng(0).standard_normal((1, meta["input"]["channels"], *meta["input"]["patch"]))
        out[package] = (session, window.astype(np.float32), meta)
    return out


def measure(packages: list[Path], repeats: int, threads: int) -> dict[Path, float]:
    from covseg.export.complexity import round_robin_medians

    runs = sessions(packages, threads)
    calls = {package: (lambda s=session, x=window: s.run(None, {"image": x}))  # type: ignore[attr-defined]
             for package, (session, window, _) in runs.items()}
    return round_robin_medians(calls, repeats)


def table(packages: list[Path], times: dict[Path, float], repeats: int, threads: int) -> str:
    metas = {package: json.loads((package / "model.json").read_text()) for package in packages}
    baseline: dict[str, float] = {}  # the first package of each task: the full model its variants are compared with
    for package in packages:
        baseline.setdefault(metas[package]["task"], times[package])
    lines = ["# CPU latency per window of model packages", "",
             f"`benchmarks/package_latency.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{platform.node()} ({platform.machine()}), ONNX Runtime CPU, {threads} threads, median of {repeats} "
             "round-robin rounds after a warm-up; speed-up relative to the first package of the same task.", "",
             "| package (folder) | version | window (z, y, x) | parameters | GMAC / window | file (KB) | ms / window "
             "| speed-up |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for package in packages:
        meta = metas[package]
        net, median = meta["network"], times[package]
        folder = package.resolve().relative_to(REPO) if package.resolve().is_relative_to(REPO) else package
        lines.append(f"| {meta['name']} (`{folder}`) | {meta['version']} | {tuple(meta['input']['patch'])} | "
                     f"{net['parameters']:,} | "
                     f"{net['macs_per_window'] / 1e9:.2f} | {net['file_bytes'] / 1024:.0f} | {median * 1000:.0f} | "
                     f"{baseline[meta['task']] / median:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", type=Path, nargs="+")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "package_latency.md")
    args = parser.parse_args()
    text = table(args.packages, measure(args.packages, args.repeats, args.threads), args.repeats, args.threads)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
