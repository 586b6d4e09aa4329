"""ELAN ``.eaf`` files from the per-frame table.

Frames become segments: consecutive frames with the same label form one
annotation on the ``expression`` tier, and a ``confidence`` tier carries each
segment's mean probability for its label. Frames without a face get no
annotation, so they show as gaps in ELAN.

Segment policy (:func:`segments`):

* A frame stands for the time from its timestamp to the next kept frame's
  timestamp; the last frame lasts one frame duration (the median spacing of
  the kept frames unless given), but not past the video's end when that is
  known.
* Segments shorter than ``min_duration`` are merged into a neighbour that
  touches them (no gap in between): the shortest short segment goes first,
  into its longer touching neighbour (the earlier one on a tie), and takes its
  label; neighbours that then carry the same label join. This repeats until
  no short segment touches another. A short segment between two gaps is kept:
  it is a real detection, and dropping it would hide that a face was there.
"""

from __future__ import annotations

import heapq
import math
import mimetypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pympi

from signfer.inference.schema import PROB_PREFIX
from signfer.io import atomic_path

#: Used for the last frame when a single frame gives no spacing to measure.
_FALLBACK_FRAME_S = 0.04


class Segment(NamedTuple):
    """A run of frames with one label: rows ``first`` to ``stop - 1`` of the table."""

    start: float
    end: float
    label: str
    first: int
    stop: int

    @property
    def duration(self) -> float:
        return self.end - self.start


def _is_face(label: object) -> bool:
    return isinstance(label, str) and label != ""


def segments(
    times: Sequence[float] | np.ndarray,
    labels: Sequence[str],
    min_duration: float = 0.0,
    *,
    frame_duration: float | None = None,
    end: float | None = None,
) -> list[Segment]:
    """Merge per-frame labels into segments (see the module docstring for the policy).

    Args:
        times: frame timestamps in seconds, increasing.
        labels: one label per frame; ``""``, ``None`` or NaN mean no face.
        min_duration: segments shorter than this (seconds) are merged into a
            touching neighbour.
        frame_duration: how long the last frame lasts; default: median spacing.
        end: the video's end (seconds), where the last frame stops at the
            latest; ``None``: unknown.

    Returns:
        Segments in time order.

    >>> [s[:3] for s in segments([0.0, 0.1, 0.2, 0.3], ["a", "a", "", "b"])]
    [(0.0, 0.2, 'a'), (0.3, 0.4, 'b')]
    """
    times = np.asarray(times, dtype=float)
    if len(times) != len(labels):
        raise ValueError(f"{len(times)} times but {len(labels)} labels")
    if len(times) == 0:
        return []
    if frame_duration is None:
        frame_duration = float(np.median(np.diff(times))) if len(times) > 1 else _FALLBACK_FRAME_S
    last_end = times[-1] + frame_duration
    if end is not None and times[-1] < end < last_end:
        last_end = end
    ends = np.append(times[1:], last_end)
    runs: list[Segment] = []
    i = 0
    while i < len(times):
        label = labels[i]
        j = i + 1
        while j < len(times) and labels[j] == label:
            j += 1
        if _is_face(label):
            runs.append(Segment(float(times[i]), float(ends[j - 1]), label, i, j))
        i = j
    if min_duration > 0 and runs:  # no face anywhere: nothing to merge
        runs = _merge_short(runs, min_duration)
    return runs


def _merge_short(runs: list[Segment], min_duration: float) -> list[Segment]:
    # A heap keyed by duration plus a linked list keeps this O(S log S), since
    # flickering raw labels on a long video can give tens of thousands of runs.
    segs: list[Segment | None] = list(runs)
    prev = list(range(-1, len(segs) - 1))
    nxt = list(range(1, len(segs) + 1))
    nxt[-1] = -1
    version = [0] * len(segs)
    heap = [(s.duration, s.start, k, 0) for k, s in enumerate(segs) if s.duration < min_duration]
    heapq.heapify(heap)

    def touching(a: int, b: int) -> bool:
        return a >= 0 and b >= 0 and segs[a].stop == segs[b].first

    def join(keep: int, gone: int, label: str) -> None:
        a, b = sorted((keep, gone))
        segs[keep] = Segment(segs[a].start, segs[b].end, label, segs[a].first, segs[b].stop)
        segs[gone] = None
        # Unlink ``gone`` from the list.
        p, n = prev[gone], nxt[gone]
        if p >= 0:
            nxt[p] = n
        if n >= 0:
            prev[n] = p

    while heap:
        duration, _, k, ver = heapq.heappop(heap)
        if segs[k] is None or ver != version[k]:
            continue
        if duration >= min_duration:
            break
        left = prev[k] if touching(prev[k], k) else -1
        right = nxt[k] if touching(k, nxt[k]) else -1
        if left < 0 and right < 0:
            continue  # isolated between gaps: kept, see policy
        if right < 0 or (left >= 0 and segs[left].duration >= segs[right].duration):
            target, other = left, right
        else:
            target, other = right, left
        join(target, k, segs[target].label)
        if other >= 0 and segs[other].label == segs[target].label:
            join(target, other, segs[target].label)
        version[target] += 1
        merged = segs[target]
        if merged.duration < min_duration:
            heapq.heappush(heap, (merged.duration, merged.start, target, version[target]))
    return [s for s in segs if s is not None]


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000.0))


def _new_eaf(video_path: str | Path, out_path: Path) -> pympi.Elan.Eaf:
    eaf = pympi.Elan.Eaf(author="signfer")
    eaf.remove_tier("default")
    video = Path(video_path).resolve()
    try:
        relative = Path(os.path.relpath(video, out_path.resolve().parent)).as_posix()
        if not relative.startswith(".."):
            relative = "./" + relative
    except ValueError:  # another drive on Windows
        relative = None
    mimetype = mimetypes.guess_type(video.name)[0] or "video/mp4"
    # ELAN stores media as a file:// URL plus a path relative to the .eaf, and
    # finds the video through the relative one when both files move together.
    eaf.add_linked_file(video.as_uri(), relpath=relative, mimetype=mimetype)
    return eaf


def _save(eaf: pympi.Elan.Eaf, out_path: Path) -> Path:
    # pympi.Elan.to_eaf would first rename the (already created) temporary
    # file to .bak, so the document is serialised here the same way it does.
    document = ElementTree.ElementTree(pympi.Elan.to_adocument(eaf, pretty=True))
    with atomic_path(out_path) as tmp:
        document.write(tmp, xml_declaration=True, encoding="UTF-8")
    return out_path


def _add_segment(eaf: pympi.Elan.Eaf, tier: str, start: float, end: float, value: str) -> None:
    start_ms, end_ms = _ms(start), _ms(end)
    # ELAN rejects empty annotations; a frame is never shorter than 1 ms.
    eaf.add_annotation(tier, max(start_ms, 0), max(end_ms, start_ms + 1), value)


def write_eaf(
    table: pd.DataFrame,
    video_path: str | Path,
    out_path: str | Path,
    *,
    tier: str = "expression",
    confidence_tier: str = "confidence",
    min_duration: float = 0.0,
    label_column: str = "label",
    frame_duration: float | None = None,
    end: float | None = None,
    model: str = "",
) -> Path:
    """Write the per-frame table as an ELAN file linked to its video.

    Args:
        table: per-frame table with ``time_s``, ``label_column`` and
            ``prob_<class>`` columns (or a ``confidence`` column).
        video_path: the video; linked by absolute URL and by a path relative
            to the ``.eaf``.
        out_path: where the ``.eaf`` goes (written atomically).
        tier: tier of expression segments.
        confidence_tier: tier whose annotations, over the same spans, hold each
            segment's mean probability of its label (e.g. ``"0.83"``). Absorbed
            short segments count with the probability they gave the
            absorbing label, so the value stays a probability of that label.
        min_duration: see :func:`segments`.
        label_column: which labels to segment, e.g. ``"label_smoothed"``.
        frame_duration: how long the last frame lasts; default: median spacing.
        end: the video's end in seconds (see :func:`segments`).
        model: the model that made the labels; named as the annotator of both
            tiers and in the file's header (property ``signfer_model``).

    Returns:
        ``out_path``.

    >>> write_eaf(table, "clip.mp4", "clip.eaf", min_duration=0.2)  # doctest: +SKIP
    """
    out_path = Path(out_path)
    labels = [v if _is_face(v) else "" for v in table[label_column].tolist()]
    times = table["time_s"].to_numpy(dtype=float)
    segs = segments(times, labels, min_duration, frame_duration=frame_duration, end=end)
    eaf = _new_eaf(video_path, out_path)
    eaf.add_tier(tier, ann=model or None)
    eaf.add_tier(confidence_tier, ann=model or None)
    if model:
        eaf.add_property("signfer_model", model)
    for seg in segs:
        _add_segment(eaf, tier, seg.start, seg.end, seg.label)
        confidence = _mean_confidence(table, seg)
        if not math.isnan(confidence):
            _add_segment(eaf, confidence_tier, seg.start, seg.end, f"{confidence:.2f}")
    return _save(eaf, out_path)


def _mean_confidence(table: pd.DataFrame, seg: Segment) -> float:
    rows = table.iloc[seg.first:seg.stop]
    column = f"{PROB_PREFIX}{seg.label}"
    if column not in rows.columns:
        column = "confidence"
    if column not in rows.columns:
        return float("nan")
    values = rows[column].to_numpy(dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def write_suggestions_eaf(
    ranked: pd.DataFrame,
    video_path: str | Path,
    out_path: str | Path,
    tier: str = "suggest",
    *,
    span_s: float = 0.2,
) -> Path:
    """Mark the frames worth a human look, e.g. the rows that ``rank_uncertain`` returns.

    Each suggested frame gets one short annotation starting at its time,
    ``span_s`` long (cut at the next suggestion, since ELAN tiers cannot
    overlap), whose value is the model's label and uncertainty, e.g.
    ``"happiness? entropy 1.21 margin 0.04"``.

    Args:
        ranked: rows of a per-frame table with ``time_s`` and ``label``, plus
            ``entropy`` and/or ``margin`` where known.
        video_path: the video to link.
        out_path: the ``.eaf`` to write (atomically).
        tier: the tier name.
        span_s: length of each annotation in seconds.

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path)
    eaf = _new_eaf(video_path, out_path)
    eaf.add_tier(tier)
    rows = ranked.sort_values("time_s", kind="stable").drop_duplicates("time_s")
    starts = rows["time_s"].to_numpy(dtype=float)
    for k, (_, row) in enumerate(rows.iterrows()):
        end = starts[k] + span_s
        if k + 1 < len(starts):
            end = min(end, starts[k + 1])
        value = f"{row.get('label', '')}?"
        for measure in ("entropy", "margin"):
            if measure in row and not pd.isna(row[measure]):
                value += f" {measure} {row[measure]:.2f}"
        _add_segment(eaf, tier, starts[k], end, value)
    return _save(eaf, out_path)
