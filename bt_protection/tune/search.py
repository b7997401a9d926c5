"""The checked inputs of a tune (`Search`) and the choices made from trial results: the
candidate each fold picks and the recommended profile."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from bt_protection.errors import UserError
from bt_protection.job import RunSpec
from bt_protection.profile import Profile, load_profile
from bt_protection.tune.folds import Fold
from bt_protection.tune.space import Space, with_values
from bt_protection.tune.trials import Objective, Trial, objective_value, trial_key

SAMPLERS = ("grid", "random", "tpe")


@dataclass(frozen=True)
class TuneSettings:
    """How the walk-forward runs (everything but the strategy, profiles and data); an
    `objective` given by name becomes the `Objective`. UserError for an unknown objective or
    sampler, for fewer than 1 `trials` and for negative `timing_shifts`."""

    train: str = "3y"
    test: str = "1y"
    step: str | None = None
    anchored: bool = False
    warmup: int = 252
    objective: Objective | str = Objective.SHARPE
    sampler: str = "grid"
    trials: int = 20
    seed: int = 0
    timing_shifts: int = 20  # circular shifts of the timing test (bt_protection.tune.timing)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "objective", Objective(self.objective))
        except ValueError:
            valid = ", ".join(o.value for o in Objective)
            raise UserError(
                f"unknown objective {self.objective!r}; valid objectives: {valid}."
            ) from None
        if self.sampler not in SAMPLERS:
            raise UserError(
                f"unknown sampler {self.sampler!r}; valid samplers: {', '.join(SAMPLERS)}."
            )
        if self.trials < 1:
            raise UserError(f"`trials` must be 1 or more, not {self.trials}.")
        if self.timing_shifts < 0:
            raise UserError(
                f"`timing_shifts` must be 0 (no timing test) or more, not {self.timing_shifts}."
            )

    @property
    def goal(self) -> Objective:
        """The objective (always an `Objective` once constructed)."""
        return Objective(self.objective)


@dataclass(frozen=True)
class Search:
    """The checked inputs of a tune: candidates as validated profiles, folds, loaded data."""

    strategy: Any  # what trials carry: a text any process resolves, or the class
    strategy_class: type  # the strategy class as the user wrote it
    params: tuple[tuple[str, Any], ...]
    base: Profile
    off: Profile
    space: Space
    candidates: list[dict[str, Any]]
    profiles: list[Profile]
    folds: list[Fold]
    frames: dict[str, pd.DataFrame]
    identity: dict[str, Any]
    settings: TuneSettings
    broker: tuple[float, float, float]

    @cached_property
    def _hashes(self) -> list[str]:
        return [profile.hash for profile in self.profiles]

    def train_key(self, fold: Fold, index: int) -> str:
        """The result key of candidate `index` on the fold's train window."""
        return trial_key(self.identity, fold.train, self._hashes[index], "train")

    def tried(self, results: Mapping[str, Any], fold: Fold) -> list[int]:
        """The candidates with a result on the fold's train window (all of them, except with
        the tpe sampler), in candidate order."""
        return [i for i in range(len(self.profiles)) if self.train_key(fold, i) in results]

    def trial(self, fold: Fold, phase: str, arm: str, profile: Profile) -> Trial:
        window = fold.train if phase == "train" else fold.test
        key = trial_key(self.identity, window, profile.hash, phase)
        cash, commission, slippage = self.broker
        spec = RunSpec(
            self.strategy,
            profile.to_dict(),
            start=window.warmup,
            end=window.last,
            cash=cash,
            commission=commission,
            slippage=slippage,
            params=self.params,
            trade_start=window.first,
        )
        return Trial(key, fold.index, phase, arm, window, spec)


def choose(search: Search, results: dict[str, dict[str, Any]]) -> dict[int, int | None]:
    """Per fold, the candidate with the best train objective (the lowest index among ties);
    None when no candidate has a defined objective (the fold then uses the base profile)."""
    chosen: dict[int, int | None] = {}
    for fold in search.folds:
        best: tuple[float, int] | None = None
        for i in search.tried(results, fold):
            value = train_objective(search, results, fold, search.profiles[i])
            if value is not None and (best is None or value > best[0]):
                best = (value, i)
        chosen[fold.index] = None if best is None else best[1]
    return chosen


def train_objective(
    search: Search, results: dict[str, dict[str, Any]], fold: Fold, profile: Profile
) -> float | None:
    """The objective of `profile` on the fold's train window (None: failed or undefined)."""
    result = results[trial_key(search.identity, fold.train, profile.hash, "train")]
    if result["metrics"] is None:
        return None
    return objective_value(result["metrics"], search.settings.goal)


def profile_of(search: Search, index: int | None) -> Profile:
    return search.base if index is None else search.profiles[index]


def candidate_values(search: Search, index: int | None) -> dict[str, Any]:
    """The space values of a candidate (of the base profile when `index` is None)."""
    if index is not None:
        return search.candidates[index]
    settings = search.base.to_dict()
    values = {}
    for key in search.space.keys:
        value: Any = settings
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values[key] = value
    return values


def recommended_profile(search: Search, ranks: Mapping[int, float]) -> Profile:
    """The candidate with the best mean train rank over all folds, as `<base>-tuned`."""
    best = min(ranks, key=lambda i: (ranks[i], i))
    settings = with_values(search.base, search.candidates[best], f"{search.base.name}-tuned")
    settings["description"] = (
        f"Tuned by bt-protection tune: candidate c{best}, the best mean rank by "
        f"{search.settings.goal.value} over the train windows of {len(search.folds)} folds "
        f"(mean rank {ranks[best]:.2f} of {len(search.candidates)})."
    )
    return load_profile(settings)
