"""Progress that people can see: tqdm bars on a terminal, plain lines elsewhere.

Long work (pre-training epochs, grid fits, frames of a video, videos of a
corpus) shows a bar on stderr when stderr is a terminal. Where it is not (a
log file, CI, a notebook) no bar is drawn and the per-epoch lines are printed
instead, as they always were; a bar and a log line never fight over one line,
because lines go through :func:`echo` (``tqdm.write`` while a bar is open).

The CLI sets the policy once (:func:`configure`): ``--quiet`` draws no bar and
prints no per-epoch line, ``-v`` prints the per-epoch lines as well as the bar.
Library callers who never call :func:`configure` get the default: bars on a
terminal, per-epoch lines otherwise.

Example:
    >>> for epoch in bar(range(3), desc="epochs", unit="epoch"):  # doctest: +SKIP
    ...     detail(echo)(f"epoch {epoch}: ...")
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

_settings = {"quiet": False, "verbose": False}
_open_bars = 0


def configure(*, quiet: bool = False, verbose: bool = False) -> None:
    """Set the policy for this process: ``quiet`` hides bars and per-epoch lines,
    ``verbose`` shows the per-epoch lines even beside a bar."""
    _settings.update(quiet=bool(quiet), verbose=bool(verbose))


def settings() -> dict:
    """The policy as :func:`configure` left it (to hand on to worker processes)."""
    return dict(_settings)


#: Narrower terminals get lines, not a bar (tqdm draws nothing at width 0, as
#: under ``script`` or ``docker exec -t`` before a size is set).
MIN_BAR_COLUMNS = 20


def bars_enabled(file=None) -> bool:
    """Whether a bar is drawn: not ``--quiet``, and ``file`` (default stderr) is a
    terminal at least :data:`MIN_BAR_COLUMNS` wide."""
    if _settings["quiet"]:
        return False
    file = sys.stderr if file is None else file
    try:
        if not file.isatty():
            return False
    except (AttributeError, ValueError):  # closed or not a real stream
        return False
    try:
        return os.get_terminal_size(file.fileno()).columns >= MIN_BAR_COLUMNS
    except (AttributeError, ValueError, OSError):  # a terminal whose size cannot be read: try a bar
        return True


def details_enabled() -> bool:
    """Whether per-epoch lines are printed: with ``-v``, or where no bar stands in for them."""
    return _settings["verbose"] or not (_settings["quiet"] or bars_enabled())


def _silent(msg: str) -> None:
    pass


def detail(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` for per-epoch lines when they are wanted (:func:`details_enabled`), else a no-op."""
    return log if details_enabled() else _silent


def echo(msg: str) -> None:
    """Print a line on stderr without breaking an open bar."""
    if _open_bars:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


class _NoBar:
    """What :func:`bar` returns when no bar is drawn: the same calls, doing nothing."""

    def __init__(self, iterable: Iterable | None = None) -> None:
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable if self._iterable is not None else ())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    """A tqdm bar on stderr that keeps count of the open bars (for :func:`echo`)."""

    def __init__(self, **kwargs: Any) -> None:
        global _open_bars
        from tqdm import tqdm

        self._bar = tqdm(file=sys.stderr, dynamic_ncols=True, **kwargs)
        self._closed = False
        _open_bars += 1

    def __iter__(self):
        try:
            yield from self._bar
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._bar.set_postfix_str(s, refresh=refresh)

    def close(self) -> None:
        global _open_bars
        if not self._closed:
            self._closed = True
            _open_bars -= 1
            self._bar.close()


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
        unit: str = "it", initial: int = 0, leave: bool = True):
    """A progress bar on stderr where :func:`bars_enabled`, else an object that does nothing.

    Use it around an iterable, or as a context manager with ``update(n)``.
    ``total=None`` (unknown length) shows a count and a rate without an ETA.
    """
    if not bars_enabled():
        return _NoBar(iterable)
    return _Bar(iterable=iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave)
