"""Shared fixtures: where the real data is, and the skips for realdata and gpu tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COVSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def _gpu_available() -> bool:
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return True
    except ImportError:
        pass
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_data = pytest.mark.skip(reason=f"real data folder {SHARED_DATA} is absent")
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine")
    have_data = SHARED_DATA.is_dir()
    have_gpu = None
    for item in items:
        if "realdata" in item.keywords and not have_data:
            item.add_marker(skip_data)
        if "gpu" in item.keywords:
            if have_gpu is None:
                have_gpu = _gpu_available()
            if not have_gpu:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder (tests using it must be marked realdata)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture
def one_torch_thread() -> object:
    """One intra-op torch thread for the test, restored after: on 2 shared cores (and with pytest -n 2)
    one thread is several times faster than two. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
