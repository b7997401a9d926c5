"""Protection systems: `base` plus one module per system, found automatically."""

from bt_protection.protections.base import (
    ConfigError,
    Protection,
    ProtectionConfig,
    register,
    registry,
)

__all__ = ["ConfigError", "Protection", "ProtectionConfig", "register", "registry"]
