"""The fingerprint of a run: what the audit header, summary.json and comparison.json record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bt_protection import __version__

if TYPE_CHECKING:
    from bt_protection.profile.model import Profile


def run_fingerprint(profile: Profile, /, **details: Any) -> dict[str, Any]:
    """Package version, profile name and hash, then `details` (strategy, data, dates, broker
    settings: whatever the caller knows of the run)."""
    return {
        "package_version": __version__,
        "profile": profile.name,
        "profile_hash": profile.hash,
        **details,
    }
