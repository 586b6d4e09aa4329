"""Face-detection benchmark on the shared signing clips.

For every registered detector whose package is installed, and every clip in
``../shared/data/videos``, measures the detection rate (frames with at least
one face), false multi-detections (frames with more than one face; each clip
shows one signer), how often the ``largest`` policy would crop a box other
than the most confident one, and the mean detection time per frame, then prints a
markdown table.

Usage:
    python benchmarks/face_detection.py [--detectors yunet mtcnn] [--crops DIR]

On a machine shared with other jobs, run it with ``OMP_NUM_THREADS=1``: both
backends' thread pools (OpenMP in yuface, torch intra-op in MTCNN) slow down
several-fold when their threads wait for a busy core.

``--crops DIR`` also saves the 64 x 64 ``crop_face`` of the largest face of a
few frames per clip as PNG files, to look at.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from signfer.errors import SignferError
from signfer.faces import DETECTORS, create_detector, crop_face, largest

SHARED = Path(__file__).resolve().parents[2] / "shared"
VIDEOS = SHARED / "data" / "videos"


def read_frames(path: Path) -> list[np.ndarray]:
    """Decode every frame of a video as H x W x 3 uint8 RGB.

    Args:
        path: a video file PyAV can read.

    Returns:
        The frames in order.
    """
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def measure(detector, frames: list[np.ndarray]) -> dict[str, float]:
    """Detect faces in every frame and summarise.

    Args:
        detector: a :class:`~signfer.faces.base.Detector`.
        frames: RGB uint8 frames.

    Returns:
        ``frames``, ``detection_rate``, ``multi`` (frames with > 1 face),
        ``largest_not_best`` (frames where the ``largest`` policy crops a box
        other than the most confident one, e.g. a big blurred hand) and
        ``ms_per_frame`` (mean wall time of ``detect``, after one untimed
        warm-up call so one-off set-up costs are not counted).
    """
    detector.detect(frames[0])
    counts, off_best, seconds = [], 0, 0.0
    for frame in frames:
        start = time.perf_counter()
        boxes = detector.detect(frame)
        seconds += time.perf_counter() - start
        counts.append(len(boxes))
        if boxes and largest(boxes) != max(boxes, key=lambda b: b.score):
            off_best += 1
    counts = np.asarray(counts)
    return {
        "frames": len(frames),
        "detection_rate": float(np.mean(counts >= 1)),
        "multi": int(np.sum(counts > 1)),
        "largest_not_best": off_best,
        "ms_per_frame": 1000.0 * seconds / len(frames),
    }


def save_crops(detector, frames: list[np.ndarray], out: Path, stem: str, n: int = 3) -> None:
    """Save the 64 x 64 crops of the largest face of ``n`` evenly spaced frames."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for i in np.linspace(0, len(frames) - 1, n).astype(int):
        crop = crop_face(frames[i], largest(detector.detect(frames[i])), 64)
        Image.fromarray(crop).save(out / f"{detector.name}_{stem}_{i:03d}.png")


def get_args_parser() -> argparse.ArgumentParser:
    """The command-line options, unparsed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--crops", type=Path, default=None, help="folder for PNG face crops")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a markdown table. Returns the exit status."""
    args = get_args_parser().parse_args(argv)
    videos = sorted(VIDEOS.glob("*.mp4"))
    if not videos:
        print(f"skipped: no shared clips at {VIDEOS} (the ../shared folder is absent)")
        return 0
    clips = {v.stem: read_frames(v) for v in videos}
    rows = []
    for name in args.detectors:
        try:
            detector = create_detector(name)
        except SignferError as err:
            print(f"skipped {name}: {err}", file=sys.stderr)
            continue
        for stem, frames in clips.items():
            r = measure(detector, frames)
            h, w = frames[0].shape[:2]
            rows.append((name, stem, f"{w}x{h}", r))
            if args.crops is not None:
                save_crops(detector, frames, args.crops, stem)
    print(
        "| detector | clip | size | frames | detection rate | frames with >1 face "
        "| largest box not the most confident | ms / frame |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, stem, size, r in rows:
        print(
            f"| {name} | {stem} | {size} | {r['frames']} | {r['detection_rate']:.3f} "
            f"| {r['multi']} | {r['largest_not_best']} | {r['ms_per_frame']:.1f} |"
        )
    # Timings on a shared machine mean little without its load and threads.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"\n{os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}, load average {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
