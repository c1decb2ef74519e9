"""Errors a user can cause; the CLI prints them as one red line and exits non-zero (never a traceback)."""

from __future__ import annotations


class LabError(Exception):
    """An operation on a lab that cannot be done; the message says why and, where possible, what to do."""

    exit_code = 1


class UsageError(LabError):
    """Bad input on the command line or in a spec (exit code 2, like argument errors)."""

    exit_code = 2
