"""Errors a user can fix: the CLI prints their one sentence and exits non-zero, no traceback."""


class UserError(Exception):
    """Bad input from the user (a profile, a data file, an argument)."""


class ProfileError(UserError, ValueError):
    """A profile that fails validation; the message names the file, key path and line."""


class DataError(UserError, ValueError):
    """A data file or folder that cannot be used; the message names the file, row or column."""


class PluginError(UserError, TypeError):
    """A strategy or protection class that breaks the plugin contract; the message names it."""
