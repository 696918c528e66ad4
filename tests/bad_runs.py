"""The run-level bad-input corpus: broken model packages, bad output folders, resource limits, failures
mid-run. Each case is a `covseg infer` command line on a small valid study (plus, for failures that
cannot be made with files, an injected fault); `tests/test_bad_runs.py` runs them and keeps
`docs/bad_runs.md` (regenerate: `python tests/bad_runs.py`) equal to what covseg prints.
"""

from __future__ import annotations

import contextlib
import errno
import io
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TABLE = REPO / "docs" / "bad_runs.md"

from covseg.engine import pipeline  # noqa: E402
from covseg.training.synthesis.dicom_series import write_nifti  # noqa: E402
from tests.model_factory import make_package, set_in_model_json  # noqa: E402
from tests.test_infer_phantom import make_phantom  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """What a case prepared: the extra arguments, the output folder, and what must survive."""

    args: list[str]
    out: Path
    keep: dict[str, str] = field(default_factory=dict)  # file in `out` -> content that must be untouched


Build = Callable[[Path, Path], Setup]  # (work folder, valid study) -> Setup


@dataclass(frozen=True)
class RunCase:
    name: str
    description: str
    code: int
    build: Build
    fault: Callable[[], contextlib.AbstractContextManager[None]] | None = None


def _package(work: Path, edit: Callable[[Path], None] | None = None, **overrides: object) -> Path:
    folder = make_package(work / "packages", "lung", **overrides)  # type: ignore[arg-type]
    if edit is not None:
        edit(folder)
    return folder


def _with_package(edit: Callable[[Path], None] | None = None, **overrides: object) -> Build:
    def build(work: Path, study: Path) -> Setup:
        return Setup([str(study), "--model", str(_package(work, edit, **overrides))], work / "out")
    return build


def _rewrite_json(key: str, value: object | None) -> Callable[[Path], None]:
    return lambda folder: set_in_model_json(folder, key, value)


def _truncate_onnx(folder: Path) -> None:
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])


def _flip_a_byte(folder: Path) -> None:
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))


def _plain(study_args: Callable[[Path, Path], list[str]]) -> Build:
    def build(work: Path, study: Path) -> Setup:
        return Setup(study_args(work, study), work / "out")
    return build


def _existing_output(work: Path, study: Path) -> Setup:
    out = work / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier result")
    return Setup([str(study), "--model", str(_package(work))], out, {"earlier.txt": "an earlier result"})


def _output_under_a_file(work: Path, study: Path) -> Setup:
    (work / "a-file").write_text("x")
    return Setup([str(study), "--model", str(_package(work))], work / "a-file" / "out")


@contextlib.contextmanager
def _failing(name: str, error: BaseException) -> Iterator[None]:
    original = getattr(pipeline, name)

    def broken(*args: object, **kwargs: object) -> None:
        raise error

    setattr(pipeline, name, broken)
    try:
        yield
    finally:
        setattr(pipeline, name, original)


def _overwrite_then_fail(work: Path, study: Path) -> Setup:
    setup = _existing_output(work, study)
    return Setup([*setup.args, "--overwrite"], setup.out, setup.keep)


CASES: tuple[RunCase, ...] = (
    RunCase("package_missing", "--model names a folder that does not exist", 4,
            _plain(lambda w, s: [str(s), "--model", str(w / "no-such-package")])),
    RunCase("onnx_truncated", "model.onnx cut in half after packaging", 4, _with_package(_truncate_onnx)),
    RunCase("hash_mismatch", "one byte of model.onnx changed after packaging", 4, _with_package(_flip_a_byte)),
    RunCase("metadata_key_missing", "model.json without its `input` section", 4,
            _with_package(_rewrite_json("input", None))),
    RunCase("metadata_bad_spacing", "model.json spacing of 0 mm", 4,
            _with_package(_rewrite_json("input.spacing_mm", [0.0, 3.0, 3.0]))),
    RunCase("model_json_not_json", "model.json is not JSON", 4,
            _with_package(lambda f: (f / "model.json").write_text("{not json"))),
    RunCase("external_data_outside", "ONNX external data pointing outside the package folder", 4,
            _with_package(external_data="../outside.bin")),
    RunCase("unknown_shipped_model", "--models names no shipped package", 4,
            _plain(lambda w, s: [str(s), "--models", "no-such-model"])),
    RunCase("output_exists", "the output folder exists and --overwrite is not given", 5, _existing_output),
    RunCase("output_parent_is_a_file", "the output folder would be inside a regular file", 5, _output_under_a_file),
    RunCase("disk_full", "the disk fills while the outputs are written (injected ENOSPC)", 5,
            _plain(lambda w, s: [str(s), "--model", str(_package(w))]),
            lambda: _failing("write_preview", OSError(errno.ENOSPC, "No space left on device"))),
    RunCase("disk_full_with_overwrite", "ENOSPC while replacing an earlier output with --overwrite", 5,
            _overwrite_then_fail, lambda: _failing("write_report", OSError(errno.ENOSPC, "No space left on device"))),
    RunCase("interrupted", "Ctrl-C (or SIGTERM) during inference", 130,
            _plain(lambda w, s: [str(s), "--model", str(_package(w))]),
            lambda: _failing("write_preview", KeyboardInterrupt())),
    RunCase("memory_limit", "--max-memory smaller than the run needs", 6,
            _plain(lambda w, s: [str(s), "--model", str(_package(w)), "--max-memory", "1"])),
    RunCase("cuda_absent", "--device cuda where ONNX Runtime has no CUDA provider", 7,
            _plain(lambda w, s: [str(s), "--model", str(_package(w)), "--device", "cuda"])),
    RunCase("input_missing", "the input path does not exist", 3,
            _plain(lambda w, s: [str(w / "absent.nii.gz"), "--model", str(_package(w))])),
    RunCase("unknown_option", "an option covseg does not have", 2,
            _plain(lambda w, s: [str(s), "--model", str(_package(w)), "--fast"])),
    RunCase("bad_option_value", "--overlap above its maximum (0.95)", 2,
            _plain(lambda w, s: [str(s), "--model", str(_package(w)), "--overlap", "1.5"])),
)


def make_study(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ct.nii.gz"
    write_nifti(make_phantom().volume, path)
    return path


def run_case(runner: Callable[[Sequence[str]], int], case: RunCase, work: Path, study: Path) -> tuple[int, str]:
    """Run one case in process; (exit code, what it wrote on stderr)."""
    setup = case.build(work, study)
    argv = ["infer", *setup.args, "--out", str(setup.out), "--threads", "1", "--progress", "none", "--quiet"]
    stderr = io.StringIO()
    fault = case.fault() if case.fault is not None else contextlib.nullcontext()
    with fault, contextlib.redirect_stderr(stderr):
        code = runner(argv)
    return code, stderr.getvalue()


def mask_paths(text: str, work: Path) -> str:
    """Stable messages for the docs table: temporary folders, the checkout and hashes masked."""
    text = text.replace(str(work), "<tmp>").replace(str(REPO), "<repo>")
    text = re.sub(r"\.covseg-tmp-([\w.-]+?)-\w{8}\b", r".covseg-tmp-\1-XXXXXXXX", text)
    return re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", text)


def render_table(rows: list[tuple[RunCase, int, str]]) -> str:
    lines = [HEAD, "| case | what | exit code | message |", "|---|---|---|---|"]
    for case, code, message in rows:
        lines.append(f"| `{case.name}` | {case.description} | {code} | {message.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


HEAD = """# Bad runs: what `covseg infer` does with broken models, outputs and failures

Generated by `python tests/bad_runs.py` from the messages covseg actually prints (temporary folders
shown as `<tmp>`); `tests/test_bad_runs.py` fails when this table is out of date. Each case runs
`covseg infer` on a small valid phantom study with a small test package (tests/model_factory.py),
in process; failures that files cannot cause (a full disk, Ctrl-C) are injected into the writer.
For every case the test checks: the exit code below, exactly one line on stderr starting `covseg:`
(usage errors: click's usage block ending in one `Error:` line), no traceback, nothing left beside
the output folder, and an earlier output folder untouched. Reader-level bad inputs (DICOM, NIfTI,
zip) are in `docs/bad_inputs.md`.
"""


def table_text(study: Path, work_root: Path) -> str:
    """docs/bad_runs.md as the corpus renders it now: each case run in its own folder under work_root."""
    from covseg.cli import run

    rows = []
    for case in CASES:
        work = work_root / case.name
        work.mkdir()
        code, err = run_case(run, case, work, study)
        rows.append((case, code, mask_paths(err.strip().splitlines()[-1] if err.strip() else "", work)))
    return render_table(rows)


def main() -> None:
    """Regenerate docs/bad_runs.md (runs the corpus in process)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        TABLE.write_text(table_text(make_study(Path(tmp) / "study"), Path(tmp)))


if __name__ == "__main__":
    main()
