"""User-facing errors.

A :class:`UserError` is bad input from the person running jaxgen (a config key,
a data path, a checkpoint, a weight file). ``launch.py`` prints its message as
one line and exits with status 2, without a traceback.
"""


class UserError(Exception):
    """Bad input that the user can fix; the message names what and where."""
