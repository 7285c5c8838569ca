"""Exceptions raised by deeprc-core."""

from __future__ import annotations


class DeepRCError(Exception):
    """Base class of every error Deep RC raises on purpose."""


class WiringError(DeepRCError, ValueError):
    """The launcher's environment variables are missing or contradict each other."""


class CommError(DeepRCError, RuntimeError):
    """A collective could not complete: a peer failed, disconnected or timed out."""


class CommTimeoutError(CommError, TimeoutError):
    """A collective waited longer than the communicator's timeout for its peers."""


class RankFailedError(CommError):
    """Another rank reported an error during a collective step; carries its message."""

    def __init__(self, message: str, failed_ranks: dict[int, str] | None = None) -> None:
        super().__init__(message)
        #: rank -> that rank's error message
        self.failed_ranks: dict[int, str] = dict(failed_ranks or {})


class ZeroCopyError(DeepRCError, TypeError):
    """A column cannot be handed to a framework without copying it.

    The message names the column, its type and the fix (usually ``copy=True``,
    :func:`deeprc_core.pack_columns` or filling nulls).
    """


class SchemaError(DeepRCError, KeyError):
    """A column is missing or its type does not fit the operation."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""
