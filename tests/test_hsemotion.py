"""Importing HSEmotion's checkpoints (the paper's starting models), safely and exactly.

No HSEmotion file can be downloaded here, so the tests make their own: a timm
EfficientNet-B0 with HSEmotion's ``Sequential(Linear)`` head pickled whole with
``torch.save(model)``, and an HDF5 file with the layer and weight names and
shapes of Keras MobileNet + ``feats`` + ``emotion_preds``, random weights. The
Keras file is checked against a forward pass written here in numpy with Keras's
conventions (HWIO kernels, 'same' padding, ZeroPadding2D before strided
convolutions, BatchNorm epsilon 1e-3, ReLU6).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from signfer.cli import main
from signfer.errors import SignferError
from signfer.labels import HSEMOTION_ORDER
from signfer.models import hsemotion
from signfer.models.checkpoint import build_model, load_meta, load_model
from signfer.io import file_sha256 as sha256
from signfer.models.hsemotion import KERAS_MEANS, import_hsemotion
from signfer.models.mobilenetv1 import BLOCKS
from signfer.models.safe_pickle import safe_loads

try:
    import h5py
except ImportError:  # the 'hsemotion' extra; `make test` installs it
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="needs h5py (pip install h5py)")

#: the real downloader, before the autouse fixture replaces it
_real_download = hsemotion._download

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("signfer: error:"), err
    return lines[0]


def faces(n: int = 3) -> list[Image.Image]:
    """Cartoon faces at sizes other than 224 and not square, so the squash is exercised."""
    from signfer.data.synthetic import draw_face

    rng = np.random.default_rng(0)
    sizes = [(180, 200), (96, 96), (240, 230)]
    return [draw_face(e, rng, 96).resize(sizes[i % 3], Image.BILINEAR)
            for i, e in enumerate(["happiness", "sadness", "surprise", "anger"][:n])]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    """Never touch the real ~/.hsemotion, and never wait for the network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SIGNFER_HOME", raising=False)

    def offline(url, dest, timeout=0):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(hsemotion, "_download", offline)


# ---------------------------------------------------------------- enet_b0_7.pt

@pytest.fixture(scope="module")
def enet_pt(tmp_path_factory):
    """A random tf_efficientnet_b0 with HSEmotion's head, pickled whole as HSEmotion did."""
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_b0", pretrained=False)
    model.classifier = torch.nn.Sequential(torch.nn.Linear(1280, 7))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # statistics that a wrong mapping would show
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("hse") / "enet_b0_7.pt"
    torch.save(model, path)
    return path, model.eval()


def test_pt_import_gives_the_original_models_probabilities(enet_pt, tmp_path):
    from torchvision import transforms

    from signfer.inference.classifier import load_classifier

    path, original = enet_pt
    stem = import_hsemotion(path, tmp_path / "enet", trust=True)
    # HSEmotion's own preprocessing (hsemotion/facial_emotions.py)
    hse = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                              transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    images = faces(3)
    with torch.no_grad():
        expected = torch.softmax(original(torch.stack([hse(im) for im in images])), 1).numpy()
    clf = load_classifier(stem, backend="torch")
    got = clf.predict_proba(np.stack([clf.crop(np.asarray(im), None) for im in images]))
    assert np.abs(got - expected).max() < 1e-4
    meta = load_meta(stem)
    assert meta.arch == "tf_efficientnet_b0" and meta.input_size == 224
    assert meta.labels == list(HSEMOTION_ORDER)
    assert meta.extra["source"]["sha256"] == sha256(path)
    assert meta.extra["source"]["saved_class"] == "timm.models.efficientnet.EfficientNet"
    assert "ImageNet" in meta.extra["hsemotion"]["preprocessing"]


def test_pt_needs_trust_with_the_reason(enet_pt, tmp_path):
    with pytest.raises(SignferError, match="pickle.*can run code.*--trust"):
        import_hsemotion(enet_pt[0], tmp_path / "enet")
    assert not (tmp_path / "enet.json").exists()


def _torch_zip(path: Path, obj) -> Path:
    """A file laid out like torch.save's archive around an arbitrary pickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("evil/byteorder", "little")
    return path


class _Call:
    """Pickles as a call of ``fn(*args)``: what a malicious checkpoint carries."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("make", [
    lambda marker: _Call(os.system, f"touch {marker}"),
    lambda marker: _Call(eval, f"open({str(marker)!r}, 'w')"),
    lambda marker: _Call(subprocess.Popen, ["touch", str(marker)]),
    lambda marker: _Call(exec, f"open({str(marker)!r}, 'w')"),
], ids=["os.system", "builtins.eval", "subprocess.Popen", "builtins.exec"])
def test_restricted_unpickler_refuses_other_globals_without_calling_them(tmp_path, make):
    marker = tmp_path / "ran"
    payload = {"model": make(marker)}
    with pytest.raises(SignferError, match="refuses") as e:
        import_hsemotion(_torch_zip(tmp_path / "evil.pt", payload), tmp_path / "out", trust=True)
    assert "\n" not in str(e.value)
    with pytest.raises(SignferError, match="refuses"):
        safe_loads(pickle.dumps(payload))
    assert not marker.exists()  # nothing was called
    assert not (tmp_path / "out.json").exists()


def test_a_module_with_a_malformed_state_is_a_one_line_error(tmp_path):
    module = torch.nn.Linear(2, 2)
    module.__dict__["_modules"] = [1]  # crafted: a list where torch keeps a mapping
    torch.save(module, tmp_path / "odd.pt")
    with pytest.raises(SignferError, match="_modules is a list, not a mapping"):
        import_hsemotion(tmp_path / "odd.pt", tmp_path / "out", trust=True)


def test_pt_that_is_not_an_efficientnet_b0_is_a_clear_error(tmp_path):
    other = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=7)
    torch.save(other, tmp_path / "mnv2.pt")
    with pytest.raises(SignferError, match="not an EfficientNet-B0"):
        import_hsemotion(tmp_path / "mnv2.pt", tmp_path / "out", trust=True)
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SignferError, match="not a PyTorch zip archive"):
        import_hsemotion(tmp_path / "junk.pt", tmp_path / "out", trust=True)
    (tmp_path / "bare.pt").write_bytes(pickle.dumps({"weight": 1}, protocol=2))
    with pytest.raises(SignferError, match="bare pickle"):
        import_hsemotion(tmp_path / "bare.pt", tmp_path / "out", trust=True)


# ---------------------------------------------------------------- mobilenet_7.h5

def keras_mobilenet_weights(n_classes: int = 7, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Random weights with Keras MobileNet's layer names and shapes (alpha 1.0), and HSEmotion's head."""
    rng = np.random.default_rng(seed)

    def kernel(*shape, fan_in):
        return rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)

    def bn(c):
        return {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 0.2, c),
                "moving_mean": rng.normal(0, 0.2, c), "moving_variance": rng.uniform(0.5, 2.0, c)}

    w = {"conv1": {"kernel": kernel(3, 3, 3, 32, fan_in=27)}, "conv1_bn": bn(32)}
    cin = 32
    for i, (cout, _) in enumerate(BLOCKS, start=1):
        w[f"conv_dw_{i}"] = {"depthwise_kernel": kernel(3, 3, cin, 1, fan_in=9)}
        w[f"conv_dw_{i}_bn"] = bn(cin)
        w[f"conv_pw_{i}"] = {"kernel": kernel(1, 1, cin, cout, fan_in=cin)}
        w[f"conv_pw_{i}_bn"] = bn(cout)
        cin = cout
    w["feats"] = {"kernel": kernel(1024, 256, fan_in=1024), "bias": rng.normal(0, 0.1, 256)}
    w["emotion_preds"] = {"kernel": kernel(256, n_classes, fan_in=256), "bias": rng.normal(0, 0.1, n_classes)}
    return {layer: {k: np.asarray(v, np.float32) for k, v in ws.items()} for layer, ws in w.items()}


def write_keras_h5(path: Path, weights: dict, keras3: bool = False) -> Path:
    """The HDF5 layout of Keras 2's model.save (Keras 3: no ':0', depthwise kernel named 'kernel')."""
    suffix = "" if keras3 else ":0"
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "3.0.0" if keras3 else "2.4.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {"layers": [
            {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 224, 224, 3]}},
            {"class_name": "Dropout", "config": {"rate": 0.5}}]}})
        mw = f.create_group("model_weights")
        layers = ["input_1", "conv1_pad", *weights, "global_pooling", "dropout"]
        mw.attrs["layer_names"] = [n.encode() for n in layers]
        for layer in layers:
            g = mw.create_group(layer)
            ws = weights.get(layer, {})
            names = [("kernel" if keras3 and w == "depthwise_kernel" else w) for w in ws]
            g.attrs["weight_names"] = [f"{layer}/{n}{suffix}".encode() for n in names]
            if ws:
                sub = g.create_group(layer)
                for name, arr in zip(names, ws.values()):
                    sub.create_dataset(name + suffix, data=arr)
    return path


# -- a reference forward pass in numpy, Keras conventions (NHWC, float64) --

def _same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """TensorFlow's 'same': total padding max((ceil(n/s) - 1) * s + k - n, 0), the extra pixel at the end."""
    pads = []
    for n in x.shape[1:3]:
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    w = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # N, H', W', C, k, k
    return w[:, ::s, ::s]


def _conv(x, kernel, s, padding):
    k = kernel.shape[0]
    x = _same_pad(x, k, s) if padding == "same" else x
    return np.einsum("nhwcij,ijcd->nhwd", _windows(x, k, s), kernel)


def _depthwise(x, kernel, s, padding):
    x = _same_pad(x, 3, s) if padding == "same" else x
    return np.einsum("nhwcij,ijc->nhwc", _windows(x, 3, s), kernel[..., 0])


def _bn(x, p):
    return (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) * p["gamma"] + p["beta"]


def _relu6(x):
    return np.clip(x, 0, 6)


def _keras_pad(x):  # ZeroPadding2D(((0, 1), (0, 1)))
    return np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))


def keras_reference_logits(w: dict, rgb: np.ndarray) -> np.ndarray:
    """Keras MobileNet + HSEmotion's head on uint8 RGB crops, with HSEmotion's preprocessing."""
    x = rgb.astype(np.float64) - np.asarray(KERAS_MEANS)  # channel 0 (R) - 103.939, as HSEmotion does
    w = {layer: {k: v.astype(np.float64) for k, v in ws.items()} for layer, ws in w.items()}
    x = _relu6(_bn(_conv(_keras_pad(x), w["conv1"]["kernel"], 2, "valid"), w["conv1_bn"]))
    for i, (_, stride) in enumerate(BLOCKS, start=1):
        if stride == 1:
            x = _depthwise(x, w[f"conv_dw_{i}"]["depthwise_kernel"], 1, "same")
        else:
            x = _depthwise(_keras_pad(x), w[f"conv_dw_{i}"]["depthwise_kernel"], 2, "valid")
        x = _relu6(_bn(x, w[f"conv_dw_{i}_bn"]))
        x = _relu6(_bn(_conv(x, w[f"conv_pw_{i}"]["kernel"], 1, "same"), w[f"conv_pw_{i}_bn"]))
    x = x.mean((1, 2))
    x = np.maximum(x @ w["feats"]["kernel"] + w["feats"]["bias"], 0)
    return x @ w["emotion_preds"]["kernel"] + w["emotion_preds"]["bias"]


@pytest.fixture(scope="module")
def keras_weights():
    return keras_mobilenet_weights()


@pytest.fixture(scope="module")
def mobilenet_h5(tmp_path_factory, keras_weights):
    return write_keras_h5(tmp_path_factory.mktemp("hse") / "mobilenet_7.h5", keras_weights)


@needs_h5py
@pytest.mark.parametrize("keras3", [False, True], ids=["keras2", "keras3"])
def test_h5_forward_pass_equals_a_numpy_keras_reference(tmp_path, keras_weights, mobilenet_h5, keras3):
    from dataclasses import replace

    path = write_keras_h5(tmp_path / "m.h5", keras_weights, keras3=True) if keras3 else mobilenet_h5
    stem = import_hsemotion(path, tmp_path / "mnet")  # no --trust: HDF5 holds no code
    model, meta = load_model(stem)
    assert meta.arch == "mobilenetv1" and meta.input_size == 224 and meta.labels == list(HSEMOTION_ORDER)
    # the model's own spec, at 64 px to keep numpy fast (the network is fully convolutional)
    spec = replace(meta.spec, size=None)
    rgb = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = model(spec.torch_input(rgb)).double().numpy()
    expected = keras_reference_logits(keras_weights, rgb)
    assert np.abs(logits - expected).max() < 1e-4
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    e = np.exp(expected - expected.max(1, keepdims=True))
    assert np.abs(probs - e / e.sum(1, keepdims=True)).max() < 1e-4
    assert meta.extra["source"]["sha256"] == sha256(path)
    assert meta.extra["source"]["dropout_rate"] == 0.5


@needs_h5py
def test_h5_that_reads_other_files_is_refused(mobilenet_h5, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-api-key=abc123XYZ")
    # a weight whose bytes are kept in another file would copy it into the checkpoint
    external = tmp_path / "external.h5"
    shutil.copy(mobilenet_h5, external)
    with h5py.File(external, "a") as f:
        group = f["model_weights/emotion_preds/emotion_preds"]
        del group["bias:0"]
        group.create_dataset("bias:0", shape=(7,), dtype="<f4", external=[(str(secret), 0, 28)])
    with pytest.raises(SignferError, match="stored in another file"):
        import_hsemotion(external, tmp_path / "a")
    # and a link to another file's group
    linked = tmp_path / "linked.h5"
    with h5py.File(linked, "w") as f:
        f["model_weights"] = h5py.ExternalLink(str(mobilenet_h5), "/model_weights")
    with pytest.raises(SignferError, match="model_weights is a link"):
        import_hsemotion(linked, tmp_path / "b")
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


def test_h5_meta_says_the_keras_means_in_signfer_units(mobilenet_h5, tmp_path):
    meta = load_meta(import_hsemotion(mobilenet_h5, tmp_path / "mnet"))
    # (x / 255 - mean) / std == x - m for each RGB channel
    x = np.array([0.0, 100.0, 255.0])
    for c in range(3):
        assert np.allclose((x / 255 - meta.mean[c]) / meta.std[c], x - KERAS_MEANS[c])


@needs_h5py
def test_bad_h5_files_are_one_line_errors(tmp_path, mobilenet_h5, keras_weights):
    data = mobilenet_h5.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SignferError, match="truncated or damaged") as e:
        import_hsemotion(truncated, tmp_path / "a")
    assert "\n" not in str(e.value)

    other = write_keras_h5(tmp_path / "other.h5", {"dense": {"kernel": np.zeros((4, 2), np.float32),
                                                              "bias": np.zeros(2, np.float32)}})
    with pytest.raises(SignferError, match="not a Keras MobileNet.*dense") as e:
        import_hsemotion(other, tmp_path / "b")
    assert "\n" not in str(e.value)

    eight = write_keras_h5(tmp_path / "eight.h5", keras_mobilenet_weights(n_classes=8))
    with pytest.raises(SignferError, match="8 outputs.*label order") as e:
        import_hsemotion(eight, tmp_path / "c")
    assert "\n" not in str(e.value)
    assert not any(tmp_path.glob("[abc].json"))


# ---------------------------------------------------------------- CLI and --init hsemotion:NAME

def test_cli_import_refuses_a_pickle_without_trust_and_imports_with_it(capsys, enet_pt, tmp_path):
    path = enet_pt[0]
    rc, _, err = cli(capsys, "import", "hsemotion", path, "--out", tmp_path / "m")
    line = one_error_line(rc, err)
    assert "--trust" in line and "run code" in line
    rc, _, err = cli(capsys, "import", "hsemotion", path, "--out", tmp_path / "m", "--trust")
    assert rc == 0, err
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["extra"]["source"]["sha256"] == sha256(path)
    assert meta["labels"] == list(HSEMOTION_ORDER)


def test_init_hsemotion_finds_the_file_in_signfer_home_and_imports_it_once(
        capsys, monkeypatch, enet_pt, tmp_path, fer_labels):
    home = tmp_path / "signfer-home"
    home.mkdir()
    (home / "enet_b0_7.pt").write_bytes(enet_pt[0].read_bytes())
    monkeypatch.setenv("SIGNFER_HOME", str(home))
    rc, out, err = cli(capsys, "models", "hsemotion:enet_b0_7")
    assert rc == 0, err
    assert "tf_efficientnet_b0" in out and "anger, disgust, fear, happiness, neutral" in out
    assert f"sha256 {sha256(enet_pt[0])}" in out
    calls = []
    monkeypatch.setattr(hsemotion, "import_hsemotion", lambda *a, **k: calls.append(a))
    # every consumer resolves it; the cached import is reused, the head mapped by name
    classes = list(reversed(fer_labels))
    model, meta = build_model("tf_efficientnet_b0", classes, "hsemotion:enet_b0_7")
    assert calls == [] and meta.input_size == 224 and meta.mean == list(IMAGENET_MEAN)
    original = enet_pt[1].classifier[0].weight
    for i, c in enumerate(classes):
        assert torch.equal(model.get_classifier().weight[i], original[HSEMOTION_ORDER.index(c)])


def test_init_hsemotion_without_the_file_says_where_to_put_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SIGNFER_HOME", str(tmp_path / "nowhere"))
    rc, _, err = cli(capsys, "models", "hsemotion:enet_b0_7")
    line = one_error_line(rc, err)
    assert "enet_b0_7.pt" in line and str(tmp_path / "nowhere") in line
    assert "download it from https://" in line and "network unreachable" in line
    rc, _, err = cli(capsys, "models", "hsemotion:enet_b9_5")
    assert "known: hsemotion:enet_b0_7, hsemotion:mobilenet_7" in one_error_line(rc, err)


@needs_h5py
def test_init_hsemotion_downloads_into_the_hsemotion_folder(monkeypatch, mobilenet_h5, tmp_path):
    from signfer.models.checkpoint import resolve_checkpoint

    assert hsemotion.URL.startswith("https://github.com/HSE-asavchenko/face-emotion-recognition/")
    monkeypatch.setattr(hsemotion, "URL", mobilenet_h5.parent.as_uri() + "/{file}")
    monkeypatch.setattr(hsemotion, "_download", _real_download)
    stem = resolve_checkpoint("hsemotion:mobilenet_7")
    assert (Path(os.environ["HOME"]) / ".hsemotion" / "mobilenet_7.h5").read_bytes() == mobilenet_h5.read_bytes()
    assert load_meta(stem).arch == "mobilenetv1"



@needs_h5py
@pytest.mark.slow
def test_cv_from_the_imported_mobilenet_keeps_its_preprocessing(capsys, monkeypatch, mobilenet_h5, tmp_path):
    from fixtures import feph_rows, make_feph

    monkeypatch.setenv("SIGNFER_HOME", str(mobilenet_h5.parent))
    root = make_feph(tmp_path / "feph", feph_rows(n_videos=4, frames=4, labels="0145"), size=32)
    rc, _, err = cli(capsys, "cv", "--dataset", "feph", "--root", root, "--init", "hsemotion:mobilenet_7",
                       "--arch", "mobilenetv1", "--techniques", "ft,ip", "--folds", "2", "--keep-models",
                       "--set", "epochs=1", "--set", "head_epochs=1", "--set", "batch_size=8",
                       "--out", tmp_path / "run")
    assert rc == 0, err
    kept = load_meta(next((tmp_path / "run").glob("runs/*/*/fold0/model.json")))
    assert kept.input_size == 224 and kept.arch == "mobilenetv1"
    assert np.allclose(kept.std, [1 / 255] * 3) and np.allclose(np.array(kept.mean) * 255, KERAS_MEANS)


@needs_h5py
def test_paper_original_grid_starts_from_both_hsemotion_models(monkeypatch, enet_pt, mobilenet_h5, tmp_path):
    from signfer.experiments.grid import PAPER_CONFIGS, named_grid

    home = tmp_path / "h"
    home.mkdir()
    for src in (enet_pt[0], mobilenet_h5):
        (home / src.name).write_bytes(src.read_bytes())
    monkeypatch.setenv("SIGNFER_HOME", str(home))
    grid = named_grid("paper-original", folds=3)
    assert grid.folds == 3 and len(grid.runs) == 2 * len(PAPER_CONFIGS)
    assert {(r.arch, r.init) for r in grid.runs} == {("mobilenetv1", "hsemotion:mobilenet_7"),
                                                      ("tf_efficientnet_b0", "hsemotion:enet_b0_7")}
    assert [r.name for r in grid.runs[:2]] == ["no-FT", "FT"]
    only = named_grid("paper-original", archs=("mobilenetv1",))
    assert {r.arch for r in only.runs} == {"mobilenetv1"}
    (home / "enet_b0_7.pt").unlink()
    with pytest.raises(SignferError, match="enet_b0_7.pt is not in"):
        named_grid("paper-original")
