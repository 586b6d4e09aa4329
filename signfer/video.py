"""Video decoding that streams: one RGB frame at a time, with its timestamp.

Every video reader in signfer goes through :func:`iter_frames`, so that frame
indices, timestamps, subsampling and rotation mean the same thing in inference,
ELAN export and dataset preparation.

Conventions:

* ``index`` counts *decoded* frames from 0, before any subsampling, so that a
  row of the per-frame table can be found again in the video.
* ``timestamp_s`` is the frame's presentation time, ``pts * time_base``, minus
  the container's start time, so that the first frame of an ordinary file is
  at 0 s, as media players (and therefore ELAN) show it. Reading pts instead
  of counting frames keeps variable-frame-rate video (phones, webcams) right.
* Rotation metadata (the display matrix that phones write for portrait video)
  is applied, so ``image`` is upright as a player shows it. Only multiples of
  90 degrees are applied; other angles do not occur in practice and are
  ignored. Mirroring flags in the matrix are ignored too.
* Speed: FFmpeg decodes with its own threads (``thread_type = "AUTO"``: frame
  and slice threads; the frames and their order are the same as without).
  Frames that ``every``/``fps`` drop are still decoded, since later frames are
  predicted from them, but never converted to RGB arrays.

>>> for frame in iter_frames("clip.mp4", fps=5):  # doctest: +SKIP
...     print(frame.index, frame.timestamp_s, frame.image.shape)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from signfer.errors import SignferError

#: Slack when comparing timestamps for ``fps=`` selection: pts arithmetic in
#: floating point would otherwise drop a frame that sits exactly on 1/F.
_TIME_EPS = 1e-6


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: position among all decoded frames, from 0.
        timestamp_s: presentation time in seconds (see module docstring).
        image: H x W x 3 uint8 RGB array, upright.
    """

    index: int
    timestamp_s: float
    image: np.ndarray


def _open(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and its first video stream, or raise a one-line SignferError."""
    path = Path(path)
    if not path.exists():
        raise SignferError(f"{path}: video not found")
    if not path.is_file():
        raise SignferError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise SignferError(f"{path}: empty file, not a video")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SignferError(f"{path}: cannot be read as a video ({_reason(exc)})") from exc
    if not container.streams.video:
        container.close()
        raise SignferError(f"{path}: has no video stream")
    return container, container.streams.video[0]


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, on one line."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _start_s(container: av.container.InputContainer) -> float:
    # container.start_time is in microseconds (AV_TIME_BASE) and is the instant
    # a player calls 0; it is None for formats that do not record one.
    start = container.start_time
    return start / 1_000_000 if start is not None else 0.0


def _upright(frame: av.VideoFrame) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    # frame.rotation is the counter-clockwise angle that displays the frame
    # upright, and np.rot90 with positive k turns counter-clockwise too.
    quarter_turns = int(round(frame.rotation / 90.0)) % 4
    if quarter_turns and frame.rotation % 90 == 0:
        image = np.ascontiguousarray(np.rot90(image, k=quarter_turns))
    return image


def iter_frames(
    path: str | Path, *, every: int | None = None, fps: float | None = None
) -> Iterator[Frame]:
    """Decode ``path`` one frame at a time; memory does not grow with its length.

    Args:
        path: a video file FFmpeg can read.
        every: keep every N-th decoded frame (indices 0, N, 2N, ...).
        fps: keep a frame only when its timestamp is at least ``1 / fps``
            after the last kept one, so the kept rate is at most ``fps``
            (less when the source rate is not a multiple of it, e.g. 25 fps
            asked for 10 gives every 3rd frame, 8.3 fps). Both ``every`` and
            ``fps`` may be given; a frame must pass both.

    Yields:
        :class:`Frame` objects in presentation order.

    Raises:
        SignferError: the file is missing, not a video, unreadable, truncated
            so badly that FFmpeg gives up, or has no frames. The file is
            opened before the first frame is asked for, so a bad path fails
            at the call, not at the first ``next()``.
    """
    if every is not None and (int(every) != every or every < 1):
        raise SignferError(f"every must be a positive whole number, got {every!r}")
    if fps is not None and not fps > 0:
        raise SignferError(f"fps must be positive, got {fps!r}")
    container, stream = _open(path)
    return _frames(Path(path), container, stream, int(every or 1), fps)


class _Keep:
    """The ``every`` / ``fps`` rule of :func:`iter_frames`: called with each
    decoded frame's index and time, in order, it says whether to keep it."""

    def __init__(self, every: int, fps: float | None) -> None:
        self.every = every
        self.min_gap = 1.0 / fps if fps else 0.0
        self.last: float | None = None

    def __call__(self, index: int, t: float) -> bool:
        if index % self.every:
            return False
        if self.last is not None and t < self.last + self.min_gap - _TIME_EPS:
            return False
        self.last = t
        return True


def _frames(
    path: Path,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    every: int,
    fps: float | None,
) -> Iterator[Frame]:
    stream.thread_type = "AUTO"
    start = _start_s(container)
    keep = _Keep(every, fps)
    step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
    last_time: float | None = None
    index = -1
    packets = 0
    try:
        for packet in container.demux(stream):
            packets += 1 if packet.size else 0
            # The last, empty packet flushes the decoder's delayed frames.
            for frame in packet.decode():
                index += 1
                if frame.pts is not None:
                    t = float(frame.pts * frame.time_base) - start
                else:
                    # Rare (raw streams): no pts, so advance by the nominal rate.
                    t = (last_time + step) if last_time is not None else 0.0
                last_time = t
                if keep(index, t):
                    yield Frame(index, t, _upright(frame))
    except av.FFmpegError as exc:
        raise SignferError(
            f"{path}: decoding failed after frame {index} ({_reason(exc)})"
        ) from exc
    finally:
        container.close()
    if index < 0:
        raise SignferError(f"{path}: no frames could be decoded (empty or truncated video)")
    _check_complete(path, stream, packets)


def _check_complete(path: Path, stream: av.video.stream.VideoStream, packets: int) -> None:
    """Raise when the file ends before the frames its index promises.

    An MP4 whose index sits at the front still opens when its tail is cut
    off; FFmpeg then just stops early. The header's sample count (0 when the
    format has none, e.g. Matroska) gives the truncation away. ``packets``
    counts every non-empty packet read, including those an edit list hides,
    so trimmed files are not flagged.
    """
    expected = stream.frames or 0
    if expected and packets < expected:
        raise SignferError(
            f"{path}: truncated video: the file holds {packets} of the {expected} "
            "frames its index lists"
        )


@dataclass(frozen=True)
class Span:
    """A stretch of a video that decodes on its own, from :func:`split_frames`.

    Attributes:
        seek: decode timestamp (stream time base) of the keyframe to seek to
            before decoding; ``None``: decode from the start of the file.
        offset: index of the first frame listed in ``pts`` and ``times``.
        pts: presentation timestamps (stream time base) of the frames from
            ``offset`` to the last one wanted, in presentation order: they
            tell each decoded frame's index after a seek.
        times: those frames' ``timestamp_s``, as :func:`iter_frames` gives them.
        indices: the frames to yield (indices among all decoded frames).
    """

    seek: int | None
    offset: int
    pts: np.ndarray
    times: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


def split_frames(path: str | Path, seconds: float, *, every: int | None = None, fps: float | None = None,
                 multiple: int = 1) -> list[Span] | None:
    """Cut the frames ``iter_frames(path, every=every, fps=fps)`` yields into
    stretches of about ``seconds`` each, which :func:`iter_span` decodes
    independently (e.g. one task each on a cluster).

    Each stretch but the last holds a whole multiple of ``multiple`` kept
    frames, so that a schedule counted in kept frames (detection every N-th,
    batches of B) restarts at every cut exactly as it would run through it.
    Only the file's packets are read, nothing is decoded.

    Returns:
        The stretches, in order; their ``indices`` together are exactly the
        frames :func:`iter_frames` yields. ``None`` when the container gives
        frames no timestamps, so a seek could not tell which frame it landed
        on (decode such a file in one piece).

    Raises:
        SignferError: as :func:`iter_frames`, or ``seconds``/``multiple`` are not positive.
    """
    if not seconds > 0:
        raise SignferError(f"the length of a video's chunks must be positive, got {seconds!r} s")
    if multiple < 1:
        raise SignferError(f"multiple must be >= 1, got {multiple!r}")
    container, stream = _open(path)
    pts, dts, key = [], [], []
    try:
        start = _start_s(container)
        base = stream.time_base
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            if packet.pts is None or (packet.is_keyframe and packet.dts is None) or base is None:
                return None
            pts.append(packet.pts)
            dts.append(packet.dts if packet.dts is not None else packet.pts)
            key.append(bool(packet.is_keyframe))
    except av.FFmpegError as exc:
        raise SignferError(f"{path}: cannot be read as a video ({_reason(exc)})") from exc
    finally:
        container.close()
    if not pts:
        raise SignferError(f"{path}: the video has no frames")
    order = np.argsort(pts, kind="stable")
    pts_sorted = np.asarray(pts, dtype=np.int64)[order]
    if len(np.unique(pts_sorted)) < len(pts_sorted):
        return None  # two frames share a timestamp: a seek could not tell them apart
    # the same arithmetic as _frames (an exact Fraction, then float), to the last bit
    times = np.asarray([float(int(p) * base) - start for p in pts_sorted])
    # a keyframe is a place to start decoding; its dts is where to seek
    key_at = np.flatnonzero(np.asarray(key)[order])
    key_dts = np.asarray(dts, dtype=np.int64)[order][key_at]
    keep = _Keep(int(every or 1), fps)
    kept = np.asarray([i for i, t in enumerate(times) if keep(i, t)], dtype=np.int64)
    cuts = [0]
    for p in range(multiple, len(kept), multiple):
        if times[kept[p]] - times[kept[cuts[-1]]] >= seconds - _TIME_EPS:
            cuts.append(p)
    spans = []
    for a, b in zip(cuts, cuts[1:] + [len(kept)]):
        first, last = int(kept[a]), int(kept[b - 1])
        k = np.searchsorted(key_at, first, side="right") - 1
        if a == 0 or k < 0:
            seek, offset = None, 0
        else:
            seek, offset = int(key_dts[k]), int(key_at[k])
        spans.append(Span(seek, offset, pts_sorted[offset:last + 1], times[offset:last + 1], kept[a:b]))
    return spans


def iter_span(path: str | Path, span: Span) -> Iterator[Frame]:
    """Decode one stretch from :func:`split_frames`: the same :class:`Frame`
    objects (index, time, image) that :func:`iter_frames` yields for those frames.

    Raises:
        SignferError: the file cannot be read, or the frames decoded after
            the seek are not the ones the stretch lists (the file changed, or
            its timestamps are not what its packets said).
    """
    container, stream = _open(path)
    return _span_frames(Path(path), container, stream, span)


def _span_frames(path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 span: Span) -> Iterator[Frame]:
    stream.thread_type = "AUTO"
    position = {int(p): span.offset + i for i, p in enumerate(span.pts)}
    wanted = iter(span.indices.tolist())
    target = next(wanted, None)
    last = span.offset + len(span.pts) - 1
    try:
        if span.seek is not None:
            container.seek(span.seek, stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            for frame in packet.decode():
                index = position.get(frame.pts) if frame.pts is not None else None
                if index is None:
                    if frame.pts is not None and frame.pts > span.pts[-1]:
                        break
                    continue  # before the stretch (decoded from the keyframe on)
                if target is not None and index > target:
                    break  # the seek landed past a wanted frame
                if index == target:
                    yield Frame(index, float(span.times[index - span.offset]), _upright(frame))
                    target = next(wanted, None)
                if target is None or index >= last:
                    return
            else:
                continue
            break
    except av.FFmpegError as exc:
        raise SignferError(f"{path}: decoding failed in the stretch from frame {span.indices[0]} "
                           f"({_reason(exc)})") from exc
    finally:
        container.close()
    raise SignferError(f"{path}: the stretch from frame {span.indices[0]} to {span.indices[-1]} did not decode "
                       f"as its packets promised (frame {target} missing); annotate this video in one piece")


def frame_count_hint(path: str | Path, *, every: int | None = None, fps: float | None = None) -> int | None:
    """About how many frames :func:`iter_frames` will yield, from the header alone
    (for a progress bar); ``None`` when the header does not say or the file
    cannot be opened. Never raises: the real reading reports bad files."""
    try:
        container, stream = _open(path)
    except SignferError:
        return None
    try:
        n = stream.frames or 0
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        if not n and stream.duration is not None and stream.time_base is not None and rate:
            n = round(float(stream.duration * stream.time_base) * rate)
    finally:
        container.close()
    if not n:
        return None
    kept = -(-n // int(every or 1))
    if fps and rate:
        kept = min(kept, math.ceil(n * fps / rate))
    return kept


def end_s(path: str | Path) -> float | None:
    """When the video ends, on the clock of :attr:`Frame.timestamp_s`, from its
    header alone (no demuxing); ``None`` when the header does not say."""
    container, stream = _open(path)
    try:
        if stream.duration is not None and stream.time_base is not None:
            start = float((stream.start_time or 0) * stream.time_base)
            return start + float(stream.duration * stream.time_base) - _start_s(container)
        if container.duration is not None:
            return container.duration / 1_000_000
        return None
    finally:
        container.close()


def probe(path: str | Path) -> dict:
    """Frame count, rate, duration and upright size of a video, without decoding it all.

    ``frames`` counts the packets a player shows: it demuxes the whole file
    (cheap, no decoding) and skips packets that the container's edit list
    discards, so it equals the number of frames :func:`iter_frames` yields
    with no subsampling, where the header's count can be off by a few.

    Returns:
        dict with ``frames`` (int), ``fps`` (float, the average rate),
        ``duration`` (seconds, float), ``width`` and ``height`` (upright, i.e.
        after rotation, as :func:`iter_frames` returns images) and
        ``rotation`` (degrees counter-clockwise applied).

    Raises:
        SignferError: as :func:`iter_frames`.
    """
    path = Path(path)
    container, stream = _open(path)
    frames = packets = 0
    rotation = 0
    first: av.VideoFrame | None = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets += 1
            if packet.is_discard:
                continue
            frames += 1
            if first is None:
                # One decoded frame tells the rotation; its side data carries
                # the display matrix.
                decoded = packet.decode()
                if decoded:
                    first = decoded[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if first is not None:
            rotation = int(first.rotation)
            width, height = first.width, first.height
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = float("nan")
        if stream.average_rate:
            rate = float(stream.average_rate)
        elif duration and duration == duration:
            rate = frames / duration
        else:
            rate = float("nan")
    except av.FFmpegError as exc:
        raise SignferError(f"{path}: cannot be read as a video ({_reason(exc)})") from exc
    finally:
        container.close()
    if frames == 0:
        raise SignferError(f"{path}: the video has no frames")
    _check_complete(path, stream, packets)
    if rotation % 180 == 90:
        width, height = height, width
    return {
        "frames": frames,
        "fps": rate,
        "duration": duration,
        "width": int(width),
        "height": int(height),
        "rotation": rotation,
    }
