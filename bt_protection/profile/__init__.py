"""Protection profiles: YAML files (the shipped ones in `bt_protection/profiles/`, loadable by
name), loaded into frozen dataclasses."""

from bt_protection.profile.loader import TOP_LEVEL_KEYS, load_profile
from bt_protection.profile.model import AuditConfig, Mode, OnError, Profile, RegimeConfig, to_plain

__all__ = [
    "TOP_LEVEL_KEYS",
    "AuditConfig",
    "Mode",
    "OnError",
    "Profile",
    "RegimeConfig",
    "load_profile",
    "to_plain",
]
