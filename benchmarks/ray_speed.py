"""signfer on a local Ray with 1 worker against 2: the paper grid, and 20 videos annotated.

    .venv/bin/python benchmarks/ray_speed.py annotate [--videos 20] [--workers 1 2]
    .venv/bin/python benchmarks/ray_speed.py chunks [--seconds 120] [--chunk 15] [--workers 1 2]
    .venv/bin/python benchmarks/ray_speed.py grid [--out DIR] [--workers 1 2] [--archs A,B] [--smoke]

Each worker count gets its own local Ray (``ray.init(num_cpus=W)``), started
before the clock starts and shut down after; every task declares 1 CPU, so W
tasks run at a time, each with one PyTorch / ONNX Runtime thread. The same
work without Ray (``--local``, on by default: one process, all cores as
threads) is the reference the results must equal.

annotate: the signing clips in ``../shared/data/videos``, copied under new
names until there are ``--videos`` of them, annotated with the default model,
detector and detection size; frames/s counts every video's frames over the
wall time of the whole corpus. The per-frame tables must be byte-identical to
the local run's.

chunks: one long video (the 320x240 clips one after another) annotated in one
piece and cut into ``--chunk``-second stretches (``annotate --chunk``), on 1 and
2 workers; the per-frame table must be byte-identical each time.

grid: the paper grid on the FePh-sized stand-in of ``benchmarks/grid_speed.py``
(2,500 FER2013 validation faces, synthetic groups, 5 folds); ``results.csv``
must equal the local run's except the timing columns. A run folder that
already holds results resumes (delete ``--out`` for a timing).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command, machine, markdown_table, shared_path

from signfer.experiments.executors import LocalExecutor, RayExecutor

#: results.csv columns that time a run.
TIMING = ["seconds", "train_img_per_s"]


def executors(workers: list[int], local: bool):
    """(label, executor factory) for the local reference and each worker count."""
    if local:
        yield "local (no Ray)", LocalExecutor
    for w in workers:
        yield f"Ray, {w} worker{'s' if w > 1 else ''}", lambda w=w: RayExecutor(num_cpus=w)


def bench_annotate(args) -> list[list]:
    from signfer.inference.annotate import annotate_many
    from signfer.inference.predict import default_model, make_classifier, make_detector

    sources = sorted(shared_path("data", "videos").glob("*.mp4"))
    rows, tables = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = []
        for i in range(args.videos):
            src = sources[i % len(sources)]
            corpus.append(Path(tmp) / "corpus" / f"{i:02d}_{src.name}")
            corpus[-1].parent.mkdir(exist_ok=True)
            shutil.copy(src, corpus[-1])
        clf, det = make_classifier(default_model()), make_detector(None)
        base = None
        for label, make in executors(args.workers, args.local):
            out = Path(tmp) / label.replace(" ", "_")
            with make() as ex:
                start = time.perf_counter()
                done = annotate_many(corpus, out, clf, det, executor=ex)
                wall = time.perf_counter() - start
            assert not done.errors, done.errors
            frames = sum(r.n_frames for r in done.results)
            tables[label] = {p.name: p.read_bytes() for p in sorted(out.glob("*.frames.csv"))}
            first = next(iter(tables))
            same = "reference" if label == first else ("yes" if tables[label] == tables[first] else "NO")
            base = base or (frames / wall if "1 worker" in label else None)
            rows.append([label, len(corpus), frames, f"{wall:.1f}", f"{frames / wall:.1f}",
                         f"{frames / wall / base:.2f}" if base else "-", same])
    print(markdown_table(["backend", "videos", "frames", "wall s", "frames/s", "vs 1 worker",
                          "tables identical"], rows, right=[False, True, True, True, True, True, False]))
    return rows


def long_video(path: Path, seconds: float) -> Path:
    """The 320x240 signing clips one after another, until ``seconds`` of video
    (at 25 frames/s, H.264 with a keyframe every 250 frames where FFmpeg has it)."""
    import av

    from signfer.video import iter_frames, probe

    sources = [p for p in sorted(shared_path("data", "videos").glob("*.mp4"))
               if (probe(p)["width"], probe(p)["height"]) == (320, 240)]
    rate, n = 25, int(seconds * 25)
    with av.open(str(path), "w", format="mp4") as out:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.gop_size = 250
        k = clip = 0
        while k < n:
            clip += 1
            for frame in iter_frames(sources[clip % len(sources)]):
                if k >= n:
                    break
                f = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
                f.pts = k
                k += 1
                for packet in stream.encode(f):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def bench_chunks(args) -> list[list]:
    """One long video: one task (a second worker idles) against stretches of ``--chunk`` seconds."""
    from signfer.inference.annotate import annotate_many
    from signfer.inference.predict import default_model, make_classifier, make_detector

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = long_video(Path(tmp) / "long.mp4", args.seconds)
        clf, det = make_classifier(default_model()), make_detector(None)
        runs = [("local (no Ray), one piece", LocalExecutor, None)]
        runs += [(f"Ray, {w} worker{'s' if w > 1 else ''}, {what}", lambda w=w: RayExecutor(num_cpus=w), chunk)
                 for w in args.workers for what, chunk in (("one piece", None), (f"{args.chunk:g} s stretches",
                                                                                  args.chunk))]
        first = base = None
        for label, make, chunk in runs:
            out = Path(tmp) / str(len(rows))
            with make() as ex:
                start = time.perf_counter()
                done = annotate_many([video], out, clf, det, executor=ex, chunk_s=chunk)
                wall = time.perf_counter() - start
            assert not done.errors, done.errors
            frames = done.results[0].n_frames
            table = (out / "long.frames.csv").read_bytes()
            first = first or table
            base = base or (wall if label.startswith("Ray, 1 worker, one") else None)
            rows.append([label, frames, f"{wall:.1f}", f"{frames / wall:.1f}",
                         f"{base / wall:.2f}" if base else "-", "yes" if table == first else "NO"])
    print(markdown_table(["backend", "frames", "wall s", "frames/s", "vs 1 worker, one piece", "table identical"],
                         rows, right=[False, True, True, True, True, False]))
    return rows


def bench_grid(args) -> list[list]:
    from grid_speed import make_standin

    from signfer.data import load_dataset
    from signfer.experiments.grid import named_grid, paper_grid
    from signfer.experiments.runner import run_grid

    out = Path(args.out)
    table = load_dataset("manifest", make_standin(out, n=args.n))
    archs = tuple(args.archs.split(","))
    grid = (named_grid("paper", archs=archs, train={"epochs": 1, "head_epochs": 1}) if args.smoke
            else paper_grid(archs=archs))
    print(f"stand-in: {len(table.samples)} faces; grid: {len(grid.runs)} configurations x {grid.folds} folds",
          flush=True)
    rows, results = [], {}
    base = None
    for label, make in executors(args.workers, args.local):
        with make() as ex:
            start = time.perf_counter()
            results[label] = run_grid(table, grid, out / label.replace(" ", "_").replace(",", ""),
                                      dataset={"kind": "manifest", "standin": True}, executor=ex)
            wall = time.perf_counter() - start
        first = next(iter(results))
        same = "reference" if label == first else (
            "yes" if results[label].drop(columns=TIMING).equals(results[first].drop(columns=TIMING)) else "NO")
        base = base or (wall if "1 worker" in label else None)
        rows.append([label, len(results[label]), f"{wall / 60:.1f}",
                     f"{base / wall:.2f}" if base else "-", same])
    print(markdown_table(["backend", "fits", "wall min", "speed-up vs 1 worker", "results.csv identical"],
                         rows, right=[False, True, True, True, False]))
    print()
    print(sensitivity_table(results[first]))
    return rows


def sensitivity_table(results: pd.DataFrame) -> str:
    """Accuracy and mean per-class recall ("sensitivity"), mean ± sd over
    folds, and seconds per fit, for every (configuration, architecture)."""
    rows = []
    for (config, arch), g in results.groupby(["config", "arch"], sort=False):
        rows.append([config, arch, len(g),
                     f"{100 * g.accuracy.mean():.1f} ± {100 * g.accuracy.std():.1f}",
                     f"{100 * g.macro_recall.mean():.1f} ± {100 * g.macro_recall.std():.1f}",
                     f"{g.seconds.mean():.0f}"])
    return markdown_table(["configuration", "arch", "folds", "accuracy %", "sensitivity %", "s per fit"],
                          rows, right=[False, False, True, True, True, True])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["annotate", "chunks", "grid"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="Ray worker counts (CPUs of the local Ray)")
    ap.add_argument("--no-local", dest="local", action="store_false", help="skip the run without Ray")
    ap.add_argument("--videos", type=int, default=20, help="annotate: corpus size")
    ap.add_argument("--out", default="runs/bench_ray", help="grid: run folders (one per backend)")
    ap.add_argument("--archs", default="mobilenetv2,efficientnet_lite0", help="grid: architectures")
    ap.add_argument("--n", type=int, default=2500, help="grid: stand-in size")
    ap.add_argument("--seconds", type=float, default=120, help="chunks: length of the long video")
    ap.add_argument("--chunk", type=float, default=15, help="chunks: seconds per stretch")
    ap.add_argument("--smoke", action="store_true", help="grid: 1 epoch per stage; checks the script only")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 200)
    {"annotate": bench_annotate, "chunks": bench_chunks, "grid": bench_grid}[args.what](args)
    print(f"\nCommand: `{command()}`  \nMachine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
