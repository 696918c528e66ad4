"""Experiments: strategies x pre-trained models x folds from one file, trained, scored and tabulated.

One configuration file (TOML or JSON) names the dataset, the folds, the strategies, the
pre-trained checkpoints and the base training configuration; `run_experiment` runs the training
loop's `fit` for every (strategy, pre-trained model, fold), predicts the fold's test cases, scores
them with `covseg.training.metrics` and writes paper 000's Tables 1-3 (`paper_tables`). Each run
ends with `result.json` in its folder; a rerun skips those runs and resumes the unfinished one
(the loop resumes from its last checkpoint), so an interrupted experiment costs at most one epoch.

Example (paper 000, Table 3; relative paths resolve against the file's folder):

    name = "paper000"
    data = "COVID-19-CT-Seg"            # any layout covseg.training.datasets reads
    folds = 5                           # or splits = "splits.json" (a fixed, published split)
    scheme = "inverse"                  # train on 20 %, test on 80 % of the cases per fold
    strategies = ["scratch", "continual", "body_finetune", "lesion_representations", "hybrid"]
    table3_pretrained = "multi_lesion"
    [pretrained]
    multi_lesion = "checkpoints/multi_lesion/checkpoints/last"
    [structures]
    infection = ["infection_ground_glass", "infection_consolidation"]
    [training]                          # covseg.training.config tree shared by every run
    data = { validation_cases = 0, classes = ["background", "infection"] }
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covseg.engine.volume import Volume
from covseg.errors import InputError
from covseg.labels import INFECTION_LABELS, label_value
from covseg.training.datasets import Case, Dataset, load_dataset
from covseg.training.evaluation import Row, evaluate_volumes, write_csv, write_evaluation
from covseg.training.splits import Scheme, Splits, make_splits, read_splits, write_splits

NO_PRETRAINED = "none"
# Strategies that start without a checkpoint; used only when training.strategies cannot be imported.
_FALLBACK_NO_CHECKPOINT = frozenset({"scratch", "frozen_random_encoder"})

FitFn = Callable[..., Any]  # fit(config, *, out_dir, resume=True, progress=None) -> FitResult
PredictFn = Callable[[Any, Any, Case, Volume], Volume]  # (fit result, config, case, image) -> covseg label map
ConfigFn = Callable[[dict[str, Any]], Any]  # plain dict -> training Config


@dataclass(frozen=True)
class ExperimentSpec:
    data: Path
    name: str = "experiment"
    splits: Path | None = None
    folds: int = 5
    seed: int = 0
    scheme: Scheme = Scheme.INVERSE  # paper 000: train on one fold (20 %), test on the rest (80 %)
    run_folds: tuple[int, ...] | None = None
    strategies: tuple[str, ...] = ("scratch",)
    pretrained: dict[str, str] = field(default_factory=dict)
    structures: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"infection": tuple(int(v) for v in INFECTION_LABELS)})
    nsd_tolerance_mm: float = 3.0
    table3_pretrained: str | None = None
    training: dict[str, Any] = field(default_factory=dict)


_SPEC_KEYS = {"data", "name", "splits", "folds", "seed", "scheme", "run_folds", "strategies", "pretrained",
              "structures", "nsd_tolerance_mm", "table3_pretrained", "training"}


def _structure(values: Sequence[object], where: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) if isinstance(v, int) else label_value(str(v)) for v in values)
    except KeyError as error:
        raise InputError(f"{where}: {error.args[0]}") from None


def spec_from_dict(data: Mapping[str, Any], base: Path = Path()) -> ExperimentSpec:
    """Validate a plain dict (relative paths resolve against `base`, the file's folder)."""
    unknown = sorted(set(data) - _SPEC_KEYS)
    if unknown:
        raise InputError(f"experiment: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_SPEC_KEYS))}")
    if "data" not in data:
        raise InputError("experiment: 'data' (the dataset folder) is required")

    def resolve(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path

    structures = {str(k): _structure(v if isinstance(v, list) else [v], f"experiment structures.{k}")
                  for k, v in data.get("structures", {}).items()}
    try:
        spec = ExperimentSpec(
            data=resolve(str(data["data"])), name=str(data.get("name", "experiment")),
            splits=resolve(str(data["splits"])) if data.get("splits") else None,
            folds=int(data.get("folds", 5)), seed=int(data.get("seed", 0)),
            scheme=Scheme(data.get("scheme", Scheme.INVERSE.value)),
            run_folds=tuple(int(f) for f in data["run_folds"]) if data.get("run_folds") is not None else None,
            strategies=tuple(str(s) for s in data.get("strategies", ("scratch",))),
            pretrained={str(k): str(resolve(str(v))) for k, v in data.get("pretrained", {}).items()},
            nsd_tolerance_mm=float(data.get("nsd_tolerance_mm", 3.0)),
            table3_pretrained=data.get("table3_pretrained"), training=dict(data.get("training", {})),
            **({"structures": structures} if structures else {}),
        )
    except (TypeError, ValueError) as error:
        raise InputError(f"experiment: {error}") from None
    if spec.table3_pretrained is not None and spec.table3_pretrained not in spec.pretrained:
        raise InputError(f"experiment table3_pretrained={spec.table3_pretrained!r} is not in pretrained")
    return spec


def load_spec(path: str | Path) -> ExperimentSpec:
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
        data = tomllib.loads(text) if source.suffix == ".toml" else json.loads(text)
    except OSError as error:
        raise InputError(f"{source}: cannot read experiment file ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{source}: not valid {source.suffix.lstrip('.') or 'JSON'} ({error})") from None
    try:
        return spec_from_dict(data, source.parent.resolve())
    except InputError as error:
        raise InputError(f"{source}: {error}") from None


@dataclass(frozen=True)
class RunKey:
    strategy: str
    pretrained: str
    fold: int

    @property
    def folder(self) -> str:
        return f"{self.strategy}__{self.pretrained}__fold{self.fold}"


def needs_checkpoint(strategy: str) -> bool:
    try:
        from covseg.training.strategies import STRATEGIES
    except ImportError:
        return strategy not in _FALLBACK_NO_CHECKPOINT
    if strategy not in STRATEGIES:
        raise InputError(f"experiment: unknown strategy {strategy!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    return bool(STRATEGIES[strategy].needs_pretrained)


def plan_runs(spec: ExperimentSpec, splits: Splits) -> list[RunKey]:
    """Every (strategy, pre-trained model, fold); strategies without a checkpoint run once as 'none'."""
    folds = spec.run_folds if spec.run_folds is not None else tuple(f.index for f in splits.folds)
    runs = []
    for strategy in spec.strategies:
        if needs_checkpoint(strategy):
            if not spec.pretrained:
                raise InputError(f"experiment: strategy {strategy!r} needs a pre-trained model; [pretrained] is empty")
            models = list(spec.pretrained)
        else:
            models = [NO_PRETRAINED]
        runs += [RunKey(strategy, model, splits.fold(k).index) for model in models for k in folds]
    return runs


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, Mapping) else value
    return out


def run_config(spec: ExperimentSpec, run: RunKey, splits_path: Path) -> dict[str, Any]:
    """The training configuration of one run as a dict: the base plus strategy, checkpoint and fold.

    The fold reaches the loop as data.splits (the experiment's split file) and data.fold: the loop
    trains on that fold's `train` ids and never sees its `test` ids.
    """
    pretrained = None if run.pretrained == NO_PRETRAINED else spec.pretrained[run.pretrained]
    return _merge(spec.training, {
        "data": {"source": "dataset", "path": str(spec.data), "splits": str(splits_path), "fold": run.fold},
        "strategy": {"name": run.strategy, "pretrained": pretrained},
        "run": {"name": f"{spec.name}/{run.folder}"},
    })


def _default_config(data: dict[str, Any]) -> Any:
    from covseg.training.config import config_from_dict

    return config_from_dict(data)


def _default_fit() -> FitFn:
    try:
        from covseg.training.loop import fit
    except ImportError as error:
        raise InputError(f"the training loop is not available ({error})") from None
    return fit


def _default_predict(result: Any, config: Any, case: Case, image: Volume) -> Volume:
    try:
        from covseg.training.predictor import predict_case
    except ImportError as error:
        raise InputError(f"the training predictor is not available ({error})") from None
    return predict_case(result, getattr(result, "config", config), image)  # the effective (adapted) config


def seconds_per_epoch(result: Any, elapsed: float, epochs: int) -> float | None:
    """Training time per epoch: the mean of the loop's per-epoch `history[i]["seconds"]` (restored
    epochs included after a resume), else wall time / epochs."""
    history = getattr(result, "history", None)
    if isinstance(history, Sequence):
        seconds = [float(h["seconds"]) for h in history if isinstance(h, Mapping) and "seconds" in h]
        if seconds:
            return sum(seconds) / len(seconds)
    value = getattr(result, "seconds_per_epoch", None)
    if isinstance(value, int | float):
        return float(value)
    return elapsed / epochs if epochs else None


@dataclass
class Runner:
    spec: ExperimentSpec
    out_dir: Path
    fit: FitFn | None = None
    predict: PredictFn | None = None
    make_config: ConfigFn | None = None
    progress: Callable[[str], None] | None = None

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def splits(self, dataset: Dataset) -> tuple[Splits, Path]:
        """The folds: the experiment's split file, else made from its seed; copied to out/splits.json,
        which a resumed experiment must agree with (runs already finished used it)."""
        target = self.out_dir / "splits.json"
        ids = [c.id for c in dataset.labelled()]
        if self.spec.splits is not None:
            splits = read_splits(self.spec.splits, known_ids=ids)
        else:
            splits = make_splits(ids, folds=self.spec.folds, seed=self.spec.seed, scheme=self.spec.scheme)
        if target.is_file():
            if read_splits(target) != splits:
                raise InputError(f"{target}: differs from the folds this experiment file defines; "
                                 "finished runs used the old folds, so use a new --out folder")
            return splits, target
        return splits, write_splits(splits, target)

    def run_one(self, run: RunKey, dataset: Dataset, splits: Splits, splits_path: Path) -> list[Row]:
        folder = self.out_dir / "runs" / run.folder
        done = folder / "result.json"
        if done.is_file():
            self._say(f"{run.folder}: finished earlier, skipped")
            return list(json.loads(done.read_text(encoding="utf-8"))["rows"])
        self._say(f"{run.folder}: training")
        config_dict = run_config(self.spec, run, splits_path)
        config = (self.make_config or _default_config)(config_dict)
        start = time.perf_counter()
        result = (self.fit or _default_fit())(config, out_dir=folder / "train", resume=True)
        elapsed = time.perf_counter() - start
        epochs = int(config_dict.get("schedule", {}).get("epochs", 0)) or int(getattr(result, "epochs", 0) or 0)
        per_epoch = seconds_per_epoch(result, elapsed, epochs)
        rows = self._score(run, result, config, dataset, splits)
        for row in rows:
            row["seconds_per_epoch"] = per_epoch
        write_csv(rows, folder / "cases.csv")
        record = {"run": run.folder, "seconds_per_epoch": per_epoch, "rows": rows}
        temporary = done.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=1), encoding="utf-8")
        temporary.replace(done)  # the marker appears complete or not at all
        return rows

    def _score(self, run: RunKey, result: Any, config: Any, dataset: Dataset, splits: Splits) -> list[Row]:
        predict = self.predict or _default_predict
        rows: list[Row] = []
        for case_id in splits.fold(run.fold).test:
            self._say(f"{run.folder}: scoring {case_id}")
            image, truth = dataset.case(case_id).load()
            prediction = predict(result, config, dataset.case(case_id), image)
            rows += evaluate_volumes(case_id, prediction, truth, labels=self.spec.structures,
                                     nsd_tolerance_mm=self.spec.nsd_tolerance_mm, strategy=run.strategy,
                                     pretrained=run.pretrained, fold=run.fold)
        return rows

    def run(self) -> list[Row]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        dataset = load_dataset(self.spec.data)
        splits, splits_path = self.splits(dataset)
        rows: list[Row] = []
        for run in plan_runs(self.spec, splits):
            rows += self.run_one(run, dataset, splits, splits_path)
        write_experiment_tables(rows, self.out_dir, self.spec)
        return rows


def write_experiment_tables(rows: Sequence[Row], out_dir: Path, spec: ExperimentSpec) -> list[Path]:
    """cases/summary tables over all runs, and paper 000's Tables 1-3 for the first structure."""
    from covseg.training.evaluation import paper_tables

    tables = write_evaluation(rows, out_dir, by=("strategy", "pretrained", "structure"), title=spec.name)
    structure = next(iter(spec.structures))
    primary = [r for r in rows if r.get("structure") == structure]
    table3 = spec.table3_pretrained or next(iter(spec.pretrained), NO_PRETRAINED)
    written = list(tables.files)
    written += paper_tables(primary, out_dir, structure=structure, table3_pretrained=table3,
                            nsd_tolerance_mm=spec.nsd_tolerance_mm)
    return written


def run_experiment(spec: ExperimentSpec | str | Path, out_dir: str | Path, *, fit: FitFn | None = None,
                   predict: PredictFn | None = None, make_config: ConfigFn | None = None,
                   progress: Callable[[str], None] | None = None) -> list[Row]:
    """Run (or resume) every run of the experiment and write its tables; returns the per-case rows.

    `fit`, `predict` and `make_config` default to the training loop's `fit`, the training predictor
    and `training.config.config_from_dict`; tests inject small fakes.
    """
    chosen = spec if isinstance(spec, ExperimentSpec) else load_spec(spec)
    return Runner(chosen, Path(out_dir), fit, predict, make_config, progress).run()


__all__ = ["ExperimentSpec", "RunKey", "load_spec", "plan_runs", "run_config", "run_experiment", "spec_from_dict"]
