"""The one exception type for user mistakes.

A `UserError` carries a one-line message that says what is wrong and how to fix it. The CLI prints
it as `error: ...` and exits with code 2, without a traceback; any other exception is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input (paths, settings, files), not a bug in lmforge."""
