"""Every shipped recipe is a valid configuration, and the training set it names can be built (issue 11).

A recipe is what `covseg train --recipe NAME` and scripts/make_default_models.sh run, often hours after it
was written; a typo or a dataset folder that no builder writes must fail here, not at the end of a queue.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from covseg.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "training" / "recipes").glob("*.toml"))
DEFAULT_MODELS = "runs/default_models/"


def _builder_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_training_sets", ROOT / "scripts" / "build_training_sets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recipes_folder_is_not_empty() -> None:
    assert len(RECIPES) >= 10


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_loads_and_validates(recipe: Path) -> None:
    config = load_config(recipe)
    assert config.run.name == recipe.stem, "the run name is the recipe name, so logs say what ran"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_dataset_is_written_by_a_builder(recipe: Path) -> None:
    config = load_config(recipe)
    if config.data.source != "dataset":
        pytest.skip("synthesised on the fly")
    if config.data.path is None:
        pytest.skip("a template: the user names the dataset folder")
    assert config.data.path.startswith(DEFAULT_MODELS), config.data.path
    folder = config.data.path.removeprefix(DEFAULT_MODELS)
    assert folder.endswith("_train"), folder
    assert folder.removesuffix("_train") in _builder_script().BUILDERS, (
        f"{recipe.name}: no builder in scripts/build_training_sets.py writes {config.data.path}")
