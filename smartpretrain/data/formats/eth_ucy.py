"""ETH/UCY pedestrian trajectories: the raw text files, the five benchmark scenes and their leave-one-out folds.

File format (the ``raw/all_data`` release used by Social-GAN and Trajectron++): one text file per recording, one
row per (frame, pedestrian), four whitespace-separated numbers ``frame ped_id x y``; ``x`` / ``y`` in metres in
the recording's world frame, ``frame`` a video frame number (25 fps) annotated every 10 frames, so consecutive
annotations are :data:`DT` = 0.4 s apart. ``ped_id`` is written as a float (``1.0``) and is an integer.

Benchmark. Five scenes, each the test set of one fold whose training data are all the other recordings
(:data:`FOLDS`): ETH (``biwi_eth``), HOTEL (``biwi_hotel``), UNIV (``students001`` + ``students003``), ZARA1
(``crowds_zara01``), ZARA2 (``crowds_zara02``); ``uni_examples`` and ``crowds_zara03`` are training-only
recordings. Every trajectory is cut into windows of :data:`NUM_STEPS` = 20 annotations, 8 observed
(:data:`NUM_HISTORY`, 3.2 s) and 12 predicted (4.8 s), the protocol of Social-LSTM, Social-GAN and Trajectron++.

This module reads and writes the files and knows the folds; it knows nothing about scenes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartpretrain.data.formats import FormatError
from smartpretrain.io.atomic import atomic_write_text

#: frames between two annotations
FRAME_STEP = 10
#: video frame rate of the recordings
FRAMES_PER_SECOND = 25.0
#: seconds between two annotations (10 frames at 25 fps)
DT = FRAME_STEP / FRAMES_PER_SECOND
#: annotations per window: 8 observed + 12 predicted
NUM_STEPS = 20
NUM_HISTORY = 8
CURRENT_STEP = NUM_HISTORY - 1
NUM_COLUMNS = 4
FILE_SUFFIX = ".txt"

#: the recordings of the release, by file stem, with the benchmark scene each belongs to (None: training only)
RECORDINGS: dict[str, str | None] = {
    "biwi_eth": "eth",
    "biwi_hotel": "hotel",
    "students001": "univ",
    "students003": "univ",
    "crowds_zara01": "zara1",
    "crowds_zara02": "zara2",
    "uni_examples": None,
    "crowds_zara03": None,
}

#: the leave-one-scene-out folds: fold name -> the recordings of its test scene (training: every other recording)
FOLDS: dict[str, tuple[str, ...]] = {
    fold: tuple(stem for stem, scene in RECORDINGS.items() if scene == fold)
    for fold in ("eth", "hotel", "univ", "zara1", "zara2")
}

#: the parts of a fold (``{fold}_{part}`` is a cache split): train and val come from the other recordings, test is
#: the held-out scene
PARTS = ("train", "val", "test")


def split_name(fold: str, part: str) -> str:
    """The cache split of one part of one fold (``"eth_train"``)."""
    if fold not in FOLDS:
        raise ValueError(f"unknown ETH/UCY fold {fold!r}: expected one of {', '.join(FOLDS)}")
    if part not in PARTS:
        raise ValueError(f"unknown ETH/UCY part {part!r}: expected one of {', '.join(PARTS)}")
    return f"{fold}_{part}"


def parse_split(split: str) -> tuple[str, str]:
    """``(fold, part)`` of a split name (``"zara1_test"`` -> ``("zara1", "test")``); ValueError naming the options."""
    fold, _, part = split.rpartition("_")
    if fold not in FOLDS or part not in PARTS:
        known = ", ".join(f"{f}_{{{','.join(PARTS)}}}" for f in FOLDS)
        raise ValueError(f"ETH/UCY split {split!r} is not one of {known}")
    return fold, part


def fold_recordings(fold: str, part: str) -> tuple[str, ...]:
    """The recordings (file stems) a part of a fold reads: the held-out scene for ``test``, all others else."""
    split_name(fold, part)
    if part == "test":
        return FOLDS[fold]
    return tuple(stem for stem in RECORDINGS if stem not in FOLDS[fold])


@dataclass(frozen=True)
class Annotations:
    """One recording's rows, sorted by (ped_id, frame). R rows.

    Attributes:
        frame: ``[R] int64`` video frame numbers.
        ped_id: ``[R] int64`` pedestrian ids.
        xy: ``[R, 2] float64`` positions in metres.
    """

    frame: np.ndarray
    ped_id: np.ndarray
    xy: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.frame)

    def pedestrians(self) -> np.ndarray:
        """The distinct pedestrian ids, ascending."""
        return np.unique(self.ped_id)


def _as_int(values: np.ndarray, what: str, path: Path) -> np.ndarray:
    rounded = np.rint(values)
    bad = np.flatnonzero(rounded != values)
    if len(bad):
        raise FormatError(path, f"row {int(bad[0]) + 1}: {what} {float(values[bad[0]]):g} is not an integer")
    return rounded.astype(np.int64)


def parse_annotations(data: bytes, path: Path | str) -> Annotations:
    """The rows of one recording's bytes, checked and sorted by (ped_id, frame).

    Raises:
        FormatError: no rows, a row without exactly four numbers, a non-numeric or non-finite value, a frame or
            id that is not an integer, a frame off the 10-frame annotation grid, two rows for one (frame, ped_id).
    """
    path = Path(path)
    text = data.decode("utf-8", errors="strict")
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        raise FormatError(path, "no rows")
    for i, fields in enumerate(lines):
        if len(fields) != NUM_COLUMNS:
            raise FormatError(path, f"row {i + 1} has {len(fields)} values, expected 4 (frame ped_id x y)")
    try:
        table = np.array(lines, dtype=np.float64)
    except ValueError as exc:
        raise FormatError(path, f"non-numeric value: {exc}") from None
    bad = np.flatnonzero(~np.isfinite(table).all(axis=1))
    if len(bad):
        raise FormatError(path, f"row {int(bad[0]) + 1} has a non-finite value")
    frame = _as_int(table[:, 0], "frame", path)
    ped_id = _as_int(table[:, 1], "ped_id", path)
    off_grid = np.flatnonzero(frame % FRAME_STEP != 0)
    if len(off_grid):
        r = int(off_grid[0])
        raise FormatError(path, f"row {r + 1}: frame {frame[r]} is not a multiple of {FRAME_STEP}")
    order = np.lexsort((frame, ped_id))
    frame, ped_id, xy = frame[order], ped_id[order], table[order, 2:4]
    same = np.flatnonzero((np.diff(frame) == 0) & (np.diff(ped_id) == 0))
    if len(same):
        r = int(same[0])
        raise FormatError(path, f"two rows for pedestrian {ped_id[r]} at frame {frame[r]}")
    return Annotations(frame=frame, ped_id=ped_id, xy=xy)


def read_annotations(path: Path | str) -> Annotations:
    """:func:`parse_annotations` of a file."""
    return parse_annotations(Path(path).read_bytes(), path)


def annotations_text(annotations: Annotations) -> str:
    """The file text of ``annotations``: tab-separated, frame-major like the release, ids written as floats."""
    order = np.lexsort((annotations.ped_id, annotations.frame))
    rows = [
        f"{float(annotations.frame[i]):.1f}\t{float(annotations.ped_id[i]):.1f}\t"
        f"{float(annotations.xy[i, 0])!r}\t{float(annotations.xy[i, 1])!r}"
        for i in order.tolist()
    ]
    return "\n".join(rows) + "\n"


def write_annotations(path: Path | str, annotations: Annotations) -> Path:
    """Write a recording file (atomically: a temporary file beside it, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, annotations_text(annotations))
    return path


__all__ = [
    "CURRENT_STEP",
    "DT",
    "FOLDS",
    "FRAMES_PER_SECOND",
    "FRAME_STEP",
    "NUM_HISTORY",
    "NUM_STEPS",
    "PARTS",
    "RECORDINGS",
    "Annotations",
    "annotations_text",
    "fold_recordings",
    "parse_annotations",
    "parse_split",
    "read_annotations",
    "split_name",
    "write_annotations",
]
