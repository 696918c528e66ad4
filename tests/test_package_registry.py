"""The model registry (shipped folder, COVSEG_MODELS_DIR, --models / --model) and `covseg models`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from covseg.cli import run
from covseg.engine.registry import MODELS_ENV, get_package, list_entries, list_packages, models_dir, resolve_models
from covseg.errors import ModelPackageError
from tests.model_factory import make_package


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    make_package(root, "lung")
    make_package(root, "infection")
    make_package(root, "liver")
    make_package(root, "lung", name="lung-newer", version="1.10.0")
    make_package(root, "lung", name="lung-older", version="1.9.0")
    return root


def test_registry_works_with_no_packages(tmp_path: Path) -> None:
    assert list_packages(tmp_path) == [] and list_packages(tmp_path / "absent") == []
    with pytest.raises(ModelPackageError, match="none installed"):
        resolve_models(None, [], directory=tmp_path)
    with pytest.raises(ModelPackageError, match="unknown model 'lung'; none installed"):
        resolve_models("lung", [], directory=tmp_path)


def test_shipped_folder_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert models_dir() == Path(__import__("covseg.models").models.__file__).parent
    list_packages()  # whatever is shipped (possibly nothing) loads


def test_environment_variable_points_elsewhere(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_ENV, str(models))
    assert models_dir() == models
    assert {p.name for p in list_packages()} == {"lung-test", "infection-test", "liver-test", "lung-newer",
                                                 "lung-older"}


def test_resolve_by_task_and_name_in_cascade_order(models: Path) -> None:
    chosen = resolve_models("liver, infection,lung", [], directory=models)
    assert [p.name for p in chosen] == ["lung-newer", "infection-test", "liver-test"]  # newest lung by version
    assert [p.name for p in resolve_models("lung-older", [], directory=models)] == ["lung-older"]
    assert [p.task for p in resolve_models(None, [], directory=models)] == ["lung", "infection", "liver"]


def test_package_named_after_its_task_is_the_default(models: Path) -> None:
    make_package(models, "lung", name="lung", version="1.0.0")  # older than lung-newer, but the default
    assert [p.name for p in resolve_models("lung", [], directory=models)] == ["lung"]
    assert resolve_models(None, [], directory=models)[0].name == "lung"
    assert [p.name for p in resolve_models("lung-newer", [], directory=models)] == ["lung-newer"]


def test_resolve_paths_and_duplicates(models: Path, tmp_path: Path) -> None:
    extra = make_package(tmp_path / "elsewhere", "infection", name="my-infection")
    chosen = resolve_models(None, [extra], directory=models)
    assert [p.name for p in chosen] == ["my-infection"]  # --model alone runs just that package
    chosen = resolve_models("lung,lung-newer", [extra, extra], directory=models)
    assert [p.name for p in chosen] == ["lung-newer", "my-infection"]


def test_unknown_name_lists_available(models: Path) -> None:
    with pytest.raises(ModelPackageError) as caught:
        resolve_models("lobes", [], directory=models)
    assert "unknown model 'lobes'" in str(caught.value) and "lung-newer (lung)" in str(caught.value)


def test_broken_package_is_refused_only_when_asked_for(models: Path) -> None:
    broken = make_package(models, "liver", name="liver-broken")
    (broken / "model.onnx").write_bytes(b"changed")
    entries = dict(list_entries(models))
    assert isinstance(entries[broken], ModelPackageError)
    assert get_package("infection", models).name == "infection-test"
    with pytest.raises(ModelPackageError, match="sha256"):
        get_package("liver-broken", models)
    with pytest.raises(ModelPackageError, match="sha256"):
        list_packages(models)


def test_registry_imports_without_torch_or_onnx() -> None:
    code = ("import sys; import covseg.engine.registry, covseg.engine.runtime, covseg.engine.preprocess, "
            "covseg.engine.sliding_window, covseg.engine.memory, covseg.commands.models; "
            "bad = [m for m in ('torch', 'onnx', 'monai') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_list_show_verify(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["models", "list", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "lung-newer" in out and "liver-test" in out and "test only" in out
    assert run(["models", "show", "infection", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    assert "infection_consolidation" in out and "licence" in out and "Metrics" in out
    assert run(["models", "verify", str(models / "liver-test")]) == 0
    out = capsys.readouterr().out
    assert "sha256" in out and "inference" in out and "CPUExecutionProvider" in out


def test_cli_errors_exit_with_package_code(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (models / "liver-test" / "model.onnx").write_bytes(b"x")
    assert run(["models", "verify", str(models / "liver-test")]) == ModelPackageError.exit_code
    assert "sha256" in capsys.readouterr().err
    assert run(["models", "show", "nope", "--models-dir", str(models)]) == ModelPackageError.exit_code
    assert run(["models", "list", "--models-dir", str(models)]) == 0  # the broken one is shown, not fatal
    assert "invalid" in capsys.readouterr().out


def test_cli_list_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["models", "list", "--models-dir", str(tmp_path)]) == 0
    assert "No model packages" in capsys.readouterr().out
