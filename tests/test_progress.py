"""Progress bars on a terminal only, --quiet and -v; and --ray without Ray installed.

A terminal is faked with a text buffer whose ``isatty()`` says yes, so that
each test also shows that a bar *is* drawn where one should be (else "no bar"
would pass for nothing).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import write_video

from signfer import progress
from signfer.cli import main

#: What a tqdm bar writes: its rate unit, or the bar itself.
BAR_MARKS = ("frame/s", "fit/s", "s/fit", "%|", "\r")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def has_bar(text: str) -> bool:
    return any(mark in text for mark in BAR_MARKS)


@pytest.fixture(autouse=True)
def _default_policy():
    progress.configure()
    yield
    progress.configure()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from signfer.models.checkpoint import build_model, save_checkpoint

    torch.manual_seed(0)
    net, meta = build_model("mobilenetv2", ["anger", "happiness", "neutral"], "random", 32)
    return save_checkpoint(net, meta, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(12)]
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=10)


def annotate(clip, model, out, *global_flags) -> int:
    return main([*global_flags, "annotate", str(clip), "--out", str(out), "--model", str(model),
                 "--backend", "torch"])


# ---------------------------------------------------------------- the policy

def test_no_bar_and_per_epoch_lines_where_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress.bars_enabled() and progress.details_enabled()
    with progress.bar(range(3), total=3) as shown:
        assert list(shown) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""


def test_on_a_terminal_a_bar_stands_in_for_the_per_epoch_lines_unless_verbose(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.bars_enabled() and not progress.details_enabled()
    progress.configure(verbose=True)
    assert progress.bars_enabled() and progress.details_enabled()
    progress.configure(quiet=True)
    assert not progress.bars_enabled() and not progress.details_enabled()
    progress.configure(quiet=True, verbose=True)
    assert progress.details_enabled()  # -v asks for the lines, even with --quiet


def test_a_terminal_without_a_width_gets_lines_not_an_invisible_bar(monkeypatch):
    class SizelessTerminal(Terminal):  # as under `script`, or `docker exec -t` before a size is set
        def fileno(self) -> int:
            return 2

    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    assert not progress.bars_enabled(SizelessTerminal())
    monkeypatch.setattr(sys, "stderr", SizelessTerminal())
    assert progress.details_enabled()  # the per-epoch lines are printed instead
    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os.terminal_size((80, 24)))
    assert progress.bars_enabled(SizelessTerminal())


def test_echo_does_not_break_an_open_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    with progress.bar(total=2, desc="fits", unit="fit") as shown:
        progress.echo("a line")
        shown.update()
    assert "a line\n" in sys.stderr.getvalue() and has_bar(sys.stderr.getvalue())


# ---------------------------------------------------------------- the command line

def test_annotate_draws_no_bar_when_stderr_is_not_a_terminal(clip, model, tmp_path, capsys):
    assert annotate(clip, model, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert not has_bar(err), err


def test_annotate_draws_a_bar_on_a_terminal_and_none_with_quiet(clip, model, tmp_path, capsys,
                                                                monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert annotate(clip, model, tmp_path / "shown") == 0
    assert "frame/s" in terminal.getvalue()  # the frames of the video
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert annotate(clip, model, tmp_path / "quiet", "--quiet") == 0
    assert quiet.getvalue() == ""
    assert (tmp_path / "quiet" / "clip.frames.csv").read_bytes() == \
        (tmp_path / "shown" / "clip.frames.csv").read_bytes()


def test_grid_bar_and_per_epoch_lines(feph_small, tiny_fer, tmp_path, monkeypatch):
    from signfer.config import RunSpec, TrainConfig
    from signfer.data import load_dataset
    from signfer.experiments.grid import Grid
    from signfer.experiments.runner import run_grid

    table = load_dataset("feph", feph_small)
    train = TrainConfig(head_epochs=1, epochs=1, batch_size=16)
    grid = Grid((RunSpec("FT", "mobilenetv2", str(tiny_fer), ("ft",), train),), folds=3, input_size=32,
                train=train)
    for name, flags in (("plain", {}), ("verbose", {"verbose": True}), ("quiet", {"quiet": True})):
        progress.configure(**flags)
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        lines: list[str] = []
        run_grid(table, grid, tmp_path / name, log=lines.append)
        epoch_lines = [line for line in lines if "epoch" in line]
        fold_lines = [line for line in lines if "fold" in line]
        assert len(fold_lines) == 3  # what runs, and how it did, are not progress: always said
        assert bool(epoch_lines) == (name == "verbose")
        assert has_bar(terminal.getvalue()) == (name != "quiet")
        if name != "quiet":
            assert "3/3" in terminal.getvalue()  # done / total


# ---------------------------------------------------------------- --ray without Ray

def test_ray_option_without_ray_says_how_to_install_it(clip, model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    rc = main(["annotate", str(clip), "--out", str(tmp_path / "out"), "--model", str(model), "--ray"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "pip install 'signfer[ray]'" in err, err
    assert not (tmp_path / "out").exists()
