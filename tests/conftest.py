"""Shared test set-up: an isolated image cache, one CPU thread, tiny models and datasets.

Everything here is small on purpose (32 px images, a few dozen samples) so that
the whole suite runs in well under a minute on two shared CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
# pytest's default import mode already puts tests/ (no __init__.py) on sys.path;
# this keeps `from fixtures import ...` working under --import-mode=importlib too.
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fixtures import feph_rows, make_feph

from signfer.labels import FER2013_ORDER

#: Side of every test image and model input.
SIZE = 32


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """Never touch ~/.cache/signfer, and leave the second core to the background job."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SIGNFER_CACHE", str(tmp_path_factory.mktemp("signfer-cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="session")
def fer_labels() -> list[str]:
    """FER2013's own (alphabetical) label order, unlike signfer's canonical order."""
    return list(FER2013_ORDER)


@pytest.fixture(scope="session")
def tiny_fer(tmp_path_factory, fer_labels) -> Path:
    """A random-weight MobileNetV2 saved as a signfer checkpoint, standing in for a FER model.

    Its labels are in FER2013 order, so every use on FePh (canonical order)
    goes through the mapping of classes by name. Read-only: copy it before
    writing anything beside it.
    """
    from signfer.models.checkpoint import build_model, save_checkpoint

    torch.manual_seed(1234)
    model, meta = build_model("mobilenetv2", fer_labels, "random", SIZE)
    meta.training_data = "tests: random weights"
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("ckpt") / "tiny-fer")


@pytest.fixture(scope="session")
def feph_small(tmp_path_factory) -> Path:
    """A clean, single-label FePh folder: 6 videos x 7 frames, every class once per video.

    42 images; each class is in 6 groups, so 3 grouped folds always work.
    Read-only: tests that damage a dataset make their own.
    """
    return make_feph(tmp_path_factory.mktemp("feph"), feph_rows(n_videos=6, frames=7), size=SIZE)


@pytest.fixture
def shared() -> Path:
    """The project's shared folder (real data, hooks), beside the repository."""
    path = Path(__file__).resolve().parents[2] / "shared"
    if not path.is_dir():
        pytest.skip(f"shared folder not found at {path}")
    return path
