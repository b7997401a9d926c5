"""Shared test fixtures: the bundled sample universe and the optional ../shared/data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from bt_protection.shipped import SAMPLE_DATA as SAMPLE_DATA  # re-exported to the tests

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def need_shared(path: Path) -> Path:
    """`path` under ../shared/data; the test skips, saying so, when it is absent."""
    if not path.exists():
        pytest.skip(f"needs ../shared/data, which is absent here: {path} does not exist")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The real-data folder beside the project root; the test skips when it is absent."""
    return need_shared(SHARED_DATA)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests using the `shared_data` fixture get the `shared_data` marker (select with -m)."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
