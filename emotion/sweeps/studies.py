"""What a search's studies are: its settings (`search.*`), the studies it runs (one blind to each test fold)
and the folds each one trains its trials on, and opening a study so that a resumed one is the same search.

A study blind to test fold k runs every job with data.exclude_fold=k: fold k is in no split of any of its
jobs, so no label or recording of fold k's speakers can move its choice.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf

from emotion.selection import score_key
from emotion.sweeps.folders import STUDY_FILE, study_storage

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "halving", "none")


class SearchError(ValueError):
    pass


@dataclass(frozen=True)
class SearchSettings:
    """`search.*` of the sweep's config, checked."""

    n_trials: int = 40  # per study
    folds: tuple | int = 2  # the folds each trial trains on, or how many: those after the study's test fold
    test_folds: tuple | str = "auto"  # one study blind to each; auto: the corpus's first fold (none: fixed splits)
    sampler: str = "tpe"
    seed: int | None = 0
    pruner: str = "median"
    startup_trials: int = 5
    prune_from_epoch: int = 1
    parallel: int | str = "auto"
    objective: str = "val_ccc_mean"  # report.select: what the table selects, the studies maximise

    @classmethod
    def of(cls, cfg: DictConfig) -> SearchSettings:
        search = OmegaConf.to_container(cfg.search, resolve=True)
        known = {field.name for field in dataclasses.fields(cls)} - {"objective"}
        unknown = sorted(set(search) - known - {"space", "trial"})
        if unknown:
            raise SearchError(f"search.{unknown[0]}: not a search setting; they are {', '.join(sorted(known))}")
        settings = {key: value for key, value in search.items() if key in known}
        for key in ("folds", "test_folds"):  # lists, as tuples: the settings are hashable
            if isinstance(settings.get(key), list):
                settings[key] = tuple(settings[key])
        checked = cls(**settings, objective=cfg.report.select)
        checked.check()
        return checked

    def check(self) -> None:
        problems = []
        if not (isinstance(self.n_trials, int) and self.n_trials >= 1):
            problems.append(f"search.n_trials={self.n_trials!r}: give a whole number of trials, at least 1")
        if self.folds in ((), 0):
            problems.append("search.folds is empty: give the folds each trial trains on, e.g. [2, 3], or how many")
        elif not (isinstance(self.folds, tuple) or (isinstance(self.folds, int) and self.folds >= 1)):
            problems.append(f"search.folds={self.folds!r}: a list of folds, e.g. [2, 3], or how many, e.g. 2")
        if not (self.test_folds == "auto" or isinstance(self.test_folds, tuple)):
            problems.append(f"search.test_folds={self.test_folds!r}: auto, or a list of folds, e.g. [1] or []")
        if self.sampler not in SAMPLERS:
            problems.append(f"search.sampler={self.sampler!r}: one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            problems.append(f"search.pruner={self.pruner!r}: one of {', '.join(PRUNERS)}")
        for key in ("startup_trials", "prune_from_epoch"):
            if not (isinstance(getattr(self, key), int) and getattr(self, key) >= 0):
                problems.append(f"search.{key}={getattr(self, key)!r}: a whole number, 0 or more")
        if self.parallel != "auto" and not (isinstance(self.parallel, int) and self.parallel >= 1):
            problems.append(f"search.parallel={self.parallel!r}: auto, or how many jobs run at once (1 or more)")
        if problems:
            raise SearchError("; ".join(problems))

    @property
    def score(self) -> str:
        """The objective's key in metrics.json's val_best: ccc_mean for val_ccc_mean."""
        return score_key(self.objective)

    def make_sampler(self, trials_before: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler, seeded by search.seed and the number of trials the study already has: a sampler
        seeded as before would propose again, on a resumed search, the trials it proposed the first time."""
        seed = None if self.seed is None else self.seed + trials_before
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # constant_liar: trials running in parallel count as bad guesses, so that the next one looks elsewhere.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=self.startup_trials, n_warmup_steps=self.prune_from_epoch
            )
        if self.pruner == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, self.prune_from_epoch))
        return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class StudyPlan:
    """One study of the search: the folds its trials train on, and the test fold it never sees."""

    name: str  # in search.db
    folds: tuple  # each trial's; (None,) for a corpus with fixed splits
    test_fold: int | None = None  # its jobs run without this fold; its choice is then trained on it


def plan_studies(settings: SearchSettings, corpus_folds: list[int], name: str) -> list[StudyPlan]:
    """The search's studies on a corpus with `corpus_folds` (empty: fixed splits)."""
    if not corpus_folds:
        if settings.test_folds not in ("auto", ()) or settings.folds not in (1, 2, (None,)):
            raise SearchError(
                "the corpus has fixed splits (data.fold=null): its test split is the search's clean test; leave "
                "search.folds and search.test_folds at their defaults"
            )
        return [StudyPlan(name, (None,))]
    test_folds = (corpus_folds[0],) if settings.test_folds == "auto" else settings.test_folds
    unknown = [fold for fold in (*test_folds, *_listed(settings.folds)) if fold not in corpus_folds]
    if unknown:
        raise SearchError(f"search: fold {unknown[0]} is not one of the corpus's folds {corpus_folds}")
    if not test_folds:
        folds = _listed(settings.folds) or tuple(corpus_folds[: settings.folds])
        return [StudyPlan(name, folds)]
    return [
        StudyPlan(f"{name}-fold{test}", _inner_folds(settings.folds, test, corpus_folds), test) for test in test_folds
    ]


def _listed(folds: tuple | int) -> tuple:
    return folds if isinstance(folds, tuple) else ()


def _inner_folds(folds: tuple | int, test: int, corpus_folds: list[int]) -> tuple:
    """A study's folds: those listed (never its test fold), or that many of the folds after its test fold."""
    if isinstance(folds, tuple):
        if test in folds:
            raise SearchError(
                f"search.folds={list(folds)} holds test fold {test} (search.test_folds): a study must never see "
                "its test fold; give the folds as a number (e.g. search.folds=2: those after each test fold)"
            )
        return folds
    after = corpus_folds[corpus_folds.index(test) + 1 :] + corpus_folds[: corpus_folds.index(test)]
    if folds > len(after):
        raise SearchError(f"search.folds={folds}: the corpus has only {len(after)} folds besides test fold {test}")
    return tuple(after[:folds])


def open_study(sweep_dir: Path, plan: StudyPlan, settings: SearchSettings, signature: dict) -> optuna.Study:
    """A study of the search, created on first use, else the one its earlier runs left; refused when it was
    run with another `signature` (what makes its trials' values compare: space, overrides, folds, encoder,
    objective)."""
    study = optuna.create_study(
        storage=study_storage(sweep_dir),
        study_name=plan.name,
        direction="maximize",
        pruner=settings.make_pruner(),
        load_if_exists=True,
    )
    study.sampler = settings.make_sampler(trials_before=len(study.trials))
    before = study.user_attrs.get("signature")
    if before is not None:
        changed = [key for key in signature if json.dumps(before.get(key)) != json.dumps(signature[key])]
        if changed:
            key = changed[0]
            raise SearchError(
                f"{sweep_dir / STUDY_FILE}: study {plan.name!r} ran with another {key} ({before.get(key)}, now "
                f"{signature[key]}): its trials' values would not compare with new ones. Run the same command as "
                "before to continue it, or start another search with name=…"
            )
    study.set_user_attr("signature", signature)
    return study
