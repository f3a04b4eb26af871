"""Errors an operator can cause or meet. Each carries one clear line; the CLI prints it and exits
non-zero. Anything else escaping to the CLI is a bug in pvc, not a user error."""
from __future__ import annotations


class PvcError(Exception):
    """Base of every expected error: its str() is the one line shown to the operator."""

    exit_code = 1


class ConfigError(PvcError):
    """The configuration is missing or invalid."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)


class NotFound(PvcError):
    """An unknown VM, node or operation."""


class Conflict(PvcError):
    """The request conflicts with the cluster's state (a busy VM, a duplicate name, a lost race)."""


class InvalidInput(PvcError):
    """Malformed input: bad XML, bad option value."""


class Unavailable(PvcError):
    """A server pvc needs is down or does not answer in time: nothing was changed, and the
    same command may work in a moment (a script retries on this exit code)."""

    exit_code = 4


class SchemaTooNew(PvcError):
    """The cluster state was written by a newer pvc."""


class HypervisorError(PvcError):
    """libvirt refused or failed an action."""


class OperationFailed(PvcError):
    """An operation ran and failed; the record holds the details."""
