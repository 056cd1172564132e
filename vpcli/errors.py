"""Errors vpcli raises on purpose.

Every error carries a one-line ``message`` (what is wrong) and a ``hint`` (how to fix it).
The CLI prints ``error: <message> (hint: <hint>)`` on one line and exits with ``exit_code``;
``--debug`` shows the traceback. Library users catch :class:`VpcliError`.

Exit codes follow DESIGN.md: 1 when an input or run failed, 2 for usage errors (bad options,
config typos, a command whose engine does not exist yet).
"""
from __future__ import annotations


class VpcliError(Exception):
    """Base class. ``str(err)`` is the one-line message shown to users."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UsageError(VpcliError):
    """Bad command-line usage: unknown choice, conflicting options, malformed value."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file or ``--set`` override is invalid (unknown key, wrong type, bad value)."""


class NotAvailableError(UsageError):
    """The requested engine, method or backend is not part of this build yet."""


class InputError(VpcliError):
    """An input path is missing, unreadable or holds no usable data."""


class VideoError(InputError):
    """A video (or frame folder / GIF) cannot be decoded, is empty, or is too short."""


class OutputError(VpcliError):
    """An output cannot be written (permissions, existing output without --overwrite)."""


class DataFormatError(InputError):
    """A label, flow or array file has the wrong magic number, shape or dtype."""


class ManifestError(VpcliError):
    """The weights manifest is malformed; the message names the entry and the field."""

    exit_code = 2


class WeightsError(VpcliError):
    """A named set of weights cannot be resolved (unknown name, not downloadable, offline)."""


class ChecksumError(WeightsError):
    """A weights file's sha256 differs from the manifest; the message gives both hashes."""
