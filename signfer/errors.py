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
====  ==========================================================================

Interrupting a run (Ctrl-C) also exits with 2, saying that finished folds are
kept.
"""

#: Exit status for bad input (see the table above).
EXIT_BAD_INPUT = 2


class SignferError(Exception):
    """A problem with the user's input or environment, stated in one line.

    Raise it with a message that names the file (and row) at fault; the CLI
    prints ``signfer: error: <message>`` and exits with status 2
    (:data:`EXIT_BAD_INPUT`), without a traceback.
    """
