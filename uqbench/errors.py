"""The error types for user mistakes and for fits that went wrong.

A :class:`UserError` is raised wherever what a caller supplied (an argument, a file, a
config value) is wrong; it is a ``ValueError``, worded for whoever called the library,
and the CLI turns it into a one-line message and exit status 2. Bugs raise ordinary
exceptions.
"""


class UserError(ValueError):
    """Something the caller supplied is wrong; the message says what and how to fix it."""


class FitDiverged(UserError):
    """Training produced a non-finite loss; the message names the loss and the step."""
