"""Trial results stored as they finish (SQLite), so a killed tune resumes where it stopped.

Results are keyed by `Trial.key`, a hash of everything a result depends on, so a stored result
is reused only by a trial with the same inputs. Results are kept as canonical JSON text and
always read back from it: a reused result and a fresh one give the same bytes downstream.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

STORE_NAME = "trials.sqlite"


def canonical(result: dict[str, Any]) -> str:
    return json.dumps(result, sort_keys=True, allow_nan=True)


class TrialStore:
    """A table `results(key, result)` in `path`; each `put` is committed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, result TEXT)")
        self._db.commit()

    def load(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored results among `keys`."""
        wanted = set(keys)
        rows = self._db.execute("SELECT key, result FROM results").fetchall()
        return {key: json.loads(text) for key, text in rows if key in wanted}

    def put(self, key: str, result: dict[str, Any]) -> dict[str, Any]:
        """Store `result` and return it as read back from its stored text."""
        text = canonical(result)
        self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)", (key, text))
        self._db.commit()
        stored: dict[str, Any] = json.loads(text)
        return stored

    def close(self) -> None:
        self._db.close()
