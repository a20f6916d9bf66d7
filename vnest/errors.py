"""Errors the CLI turns into exit codes: 1 for failures, 2 for bad usage or config."""

from __future__ import annotations


class VnestError(Exception):
    """A failure with a one-line reason for the user (exit code 1)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(VnestError):
    """Bad arguments or a bad config file (exit code 2)."""

    exit_code = 2
