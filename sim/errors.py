"""Errors a user can cause, kept apart from bugs.

`UserError` (and its subclasses) are caught by the CLI and printed as one line
with a non-zero exit code: bad traces and bad configs are the user's to fix and
a traceback would only hide the message. `InvariantError` is the opposite: the
simulator broke one of its own promises, which is a bug and must be loud.
"""


class UserError(Exception):
    """Bad input (trace, config): reported as one line, exit code 2."""


class TraceError(UserError):
    """A trace file that cannot be used as it is."""


class ConfigError(UserError):
    """A config value that cannot be simulated."""


class InvariantError(AssertionError):
    """The simulator violated one of its own invariants: a bug, never bad input."""
