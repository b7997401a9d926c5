"""The `tpe` sampler: per fold, Optuna's TPE proposes candidates of the grid in rounds.

Each fold has its own study, seeded with `seed + fold`. A round asks every study for `BATCH`
candidates, runs them all (on whatever engine), then tells each study its results in the order
it asked: the proposals depend only on the seed and the results, never on which worker finished
first, so one process, several and a Dask cluster try the same candidates. A proposal that
repeats an earlier one reuses its result. Optuna is an optional dependency (extra `tpe`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bt_protection.errors import UserError
from bt_protection.tune.search import Search, train_objective
from bt_protection.tune.trials import Trial

BATCH = 4  # candidates per fold and round: fixed, so results do not depend on the workers


def run_tpe(search: Search, run_batch: Callable[[list[Trial]], Any]) -> None:
    """Ask, run and tell `search.settings.trials` candidates per fold; `run_batch` runs a
    list of trials and adds their results to the dict `results` it returns."""
    try:
        import optuna
    except ImportError:
        raise UserError(
            "`sampler` tpe needs Optuna; install it with pip install 'bt-protection[tpe]'."
        ) from None
    settings = search.settings
    studies = {
        fold.index: optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=settings.seed + fold.index),
        )
        for fold in search.folds
    }
    sizes = [len(values) for values in search.space.values.values()]
    asked = 0
    while asked < settings.trials:
        count = min(BATCH, settings.trials - asked)
        rounds = []
        for fold in search.folds:
            for _ in range(count):
                ask = studies[fold.index].ask()
                picks = [
                    ask.suggest_categorical(key, list(range(n)))
                    for key, n in zip(search.space.keys, sizes, strict=True)
                ]
                index = int(np.ravel_multi_index(picks, sizes))
                rounds.append((fold, ask, index))
        results = run_batch(
            [search.trial(fold, "train", f"c{i}", search.profiles[i]) for fold, _, i in rounds]
        )
        for fold, ask, index in rounds:
            value = train_objective(search, results, fold, search.profiles[index])
            if value is None:
                studies[fold.index].tell(ask, state=optuna.trial.TrialState.FAIL)
            else:
                studies[fold.index].tell(ask, value)
        asked += count
