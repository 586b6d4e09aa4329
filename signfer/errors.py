"""The one exception type that the CLI turns into a one-line message."""


class SignferError(Exception):
    """A problem with the user's input or environment, stated in one line.

    Raise it with a message that names the file (and row) at fault; the CLI
    prints ``signfer: error: <message>`` and exits with status 2, without a
    traceback.
    """
