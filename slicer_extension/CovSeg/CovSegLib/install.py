"""Make covseg (inference extra only: no torch) importable in Slicer's Python, with a version check."""

from __future__ import annotations

import shutil
import sys
from importlib import metadata

MINIMUM_COVSEG_VERSION = "0.1.0"
REQUIREMENT = f"covseg[cpu]>={MINIMUM_COVSEG_VERSION}"


class InstallError(RuntimeError):
    """covseg could not be installed; the message says what to do."""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("+")[0].split(".")[:3] if part.isdigit())


def installed_version() -> str | None:
    try:
        return metadata.version("covseg")
    except metadata.PackageNotFoundError:
        return None


def ensure_covseg() -> str:
    """Return the installed covseg version, installing or upgrading it (after confirmation) when needed."""
    version = installed_version()
    if version is not None and _version_tuple(version) >= _version_tuple(MINIMUM_COVSEG_VERSION):
        return version
    import slicer

    action = "upgrade" if version else "install"
    if not slicer.util.confirmOkCancelDisplay(
            f"CovSeg needs {REQUIREMENT} in Slicer's Python ({action} now; about 200 MB, no PyTorch)."):
        raise InstallError("covseg is required; installation was declined")
    try:
        slicer.util.pip_install(REQUIREMENT)
    except Exception as error:  # pip's failures come as many exception types; report them as one
        raise InstallError(f"could not {action} {REQUIREMENT}: {error}. Install it from a terminal with "
                           f"PythonSlicer -m pip install '{REQUIREMENT}'") from error
    version = installed_version()
    if version is None or _version_tuple(version) < _version_tuple(MINIMUM_COVSEG_VERSION):
        raise InstallError(f"covseg {version} is installed but {MINIMUM_COVSEG_VERSION} or newer is needed")
    return version


def covseg_launcher() -> list[str]:
    """How to start covseg: Slicer's Python with `-m covseg` (works without a console script on PATH)."""
    python = shutil.which("PythonSlicer") or sys.executable
    return [python, "-m", "covseg"]
