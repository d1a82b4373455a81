"""The project's user-facing exception."""

from __future__ import annotations


class KvswarmError(Exception):
    """A problem the user can fix (bad config, port in use, missing tool).

    The message is complete and fits on one line; the CLI prints it as is and exits 2.
    """


class ConfigError(KvswarmError):
    """A configuration file or option is invalid: `file: key.path: what is wrong`."""
