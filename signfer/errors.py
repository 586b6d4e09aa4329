"""The one exception type that the CLI turns into a one-line message, and the exit codes.

Exit codes of the ``signfer`` command:

====  ==========================================================================
0     done.
1     a bug in signfer: an unexpected Python traceback (please report it).
2     bad input or environment, stated in one ``signfer: error:`` line that
      names the file (and row) at fault: a missing or unreadable image, a CSV
      without its columns, an unknown label, a setting out of range, an output
      path that cannot be written, a damaged run folder or checkpoint, and
      usage errors that argparse reports. Nothing already written is lost.
      ``annotate`` and ``suggest`` go on past a video they cannot read (one
      error line each) and exit with 2 at the end; the other videos are done.
141   the reader of the output went away (``signfer models | head -1``), as
      for a process that SIGPIPE ends; nothing is printed.
====  ==========================================================================

Interrupting a command (Ctrl-C) also exits with 2, in one line that says what
was kept (finished folds, the fit in progress, finished videos) and that the
same command resumes.
"""

#: Exit status for bad input (see the table above).
EXIT_BAD_INPUT = 2
#: Exit status when the reader of stdout went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none:
    what a one-line error says about the cause it reports.

    >>> first_line(ValueError("bad row\\nmore detail")), first_line(KeyError())
    ('bad row', 'KeyError')
    """
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class SignferError(Exception):
    """A problem with the user's input or environment, stated in one line.

    Raise it with a message that names the file (and row) at fault; the CLI
    prints ``signfer: error: <message>`` and exits with status 2
    (:data:`EXIT_BAD_INPUT`), without a traceback.
    """
