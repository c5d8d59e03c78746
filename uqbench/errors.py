"""The one error type for user mistakes.

Raised anywhere a user's input (a flag, a file, a config value) is wrong; the CLI turns it
into a one-line message and exit status 2. Bugs raise ordinary exceptions.
"""


class UserError(Exception):
    """Something the user supplied is wrong; the message says what and how to fix it."""
