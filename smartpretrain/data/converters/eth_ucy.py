"""ETH/UCY pedestrian recordings -> :class:`~smartpretrain.data.scene.Scene`, one scene per 20-annotation window.

Raw layout and folds: :mod:`smartpretrain.data.formats.eth_ucy` (``{raw_root}/{recording}.txt``, rows ``frame
ped_id x y``, 2.5 Hz). A cache split is one part of one leave-one-scene-out fold, ``{fold}_{part}``
(``eth_train``, ``eth_val``, ``eth_test``, ``hotel_train``, …).

Windows. A scene is a window of :data:`~smartpretrain.data.formats.eth_ucy.NUM_STEPS` = 20 consecutive slots of the
recording's 0.4 s annotation grid (8 observed, 12 predicted; ``dt`` = 0.4 s, ``current_step`` = 7): the field's
protocol, on real time. (Social-GAN's loader slides over the list of *non-empty* frames instead, so a window can
jump over frames in which nobody is annotated; here a window is always 7.6 s of real time.) Windows start at every
``window_stride``-th slot (1 = every slot, as in Social-GAN and Trajectron++). A window is a scene when at least one
pedestrian is annotated at all 20 of its slots; windows without such a pedestrian have nothing to score and are
not listed (counted in the accounting below).

Parts. ``test`` is every window of the fold's held-out scene. ``train`` and ``val`` come from the other recordings:
each recording's grid is cut at ``1 - val_fraction`` of its span; windows wholly before the cut are ``train``,
windows wholly after it ``val``, windows across the cut are in neither (no annotation is in both parts).

Agents. Every pedestrian annotated at least once in the window, in ascending id order, type PEDESTRIAN, ids the
``ped_id`` integers as strings. Roles: the pedestrians annotated at all 20 slots are the ones the benchmark scores,
SCORED, and the one with the smallest id among them is the FOCAL agent (a scene has exactly one); every other
pedestrian is UNSCORED context. Field-comparable numbers therefore use ``eval_scope=scored`` (every complete
pedestrian, as in the literature); ``focal`` scores one pedestrian per window. No sizes, no z, no map, no
data-collecting vehicle. The origin is the focal pedestrian's position at the current step.

Velocity and heading are derived from positions as for AV1 (:func:`~smartpretrain.data.converters.av1.\
motion_from_positions`: finite differences over time, a distance-gated chord for the heading, nothing in the
history depends on the future) with a chord of :data:`HEADING_MIN_DISPLACEMENT` = 0.25 m: a walking pedestrian
(about 1.3 m/s) covers 0.5 m per slot, so the chord is one slot while walking, and a standing one keeps its last
heading instead of turning annotation noise into headings.

Accounting (:meth:`EthUcyConverter.accounting`, the manifest's ``accounting``): for every recording of the split,
each pedestrian is exactly one of *scored* (complete in at least one of the split's windows), *context_only* (in
some window, never complete; ``shorter_than_window`` of them have fewer than 20 annotations in all) or *outside*
(none of its annotations falls in a window of this part: it lies in the other part or across the cut), so
``scored + context_only + outside = num_pedestrians``.

Errors name the file: a missing recording, or one that breaks the format (:func:`~smartpretrain.data.formats.\
eth_ucy.parse_annotations`), stops the conversion before any work with one line; they are not per-scene drops,
because a recording that cannot be read has no windows to list.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from smartpretrain.data.converters.av1 import motion_from_positions
from smartpretrain.data.converters.base import ConvertedScene, SceneConverter, validated
from smartpretrain.data.formats import FormatError
from smartpretrain.data.formats import eth_ucy as fmt
from smartpretrain.data.scene import AgentTracks, MapData, Scene
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset

#: chord (m) a pedestrian must cover before its direction of motion counts as its heading (module docstring)
HEADING_MIN_DISPLACEMENT = 0.25


@dataclass(frozen=True)
class Recording:
    """One recording on its annotation grid: P pedestrians, G slots from ``first_frame`` in steps of 10 frames.

    Attributes:
        stem: the file stem (``"biwi_eth"``).
        first_frame: the frame number of slot 0.
        ped_ids: ``[P] int64`` ascending.
        observed: ``[P, G] bool`` annotated at that slot.
        xy: ``[P, G, 2] float64`` positions (0 where not annotated).
    """

    stem: str
    first_frame: int
    ped_ids: np.ndarray
    observed: np.ndarray
    xy: np.ndarray

    @property
    def num_slots(self) -> int:
        return self.observed.shape[1]

    def frame(self, slot: int) -> int:
        return self.first_frame + slot * fmt.FRAME_STEP


def recording_grid(annotations: fmt.Annotations, stem: str) -> Recording:
    """Place a recording's rows on its annotation grid."""
    slot = (annotations.frame - annotations.frame.min()) // fmt.FRAME_STEP
    ped_ids, row_ped = np.unique(annotations.ped_id, return_inverse=True)
    num_slots = int(slot.max()) + 1
    observed = np.zeros((len(ped_ids), num_slots), bool)
    xy = np.zeros((len(ped_ids), num_slots, 2), np.float64)
    observed[row_ped, slot] = True
    xy[row_ped, slot] = annotations.xy
    return Recording(stem, int(annotations.frame.min()), ped_ids, observed, xy)


@lru_cache(maxsize=16)
def _load(path: str, size: int, mtime_ns: int) -> Recording:  # keyed on the file's stat: an edited file re-reads
    return recording_grid(fmt.read_annotations(path), Path(path).stem)


def load_recording(path: Path) -> Recording:
    """The recording at ``path`` on its grid (cached per process while the file is unchanged)."""
    stat = path.stat()
    return _load(str(path), stat.st_size, stat.st_mtime_ns)


def window_starts(num_slots: int, part: str, val_fraction: float, stride: int) -> np.ndarray:
    """The first slots of a part's windows on a grid of ``num_slots`` (see the module docstring)."""
    w = fmt.NUM_STEPS
    if part == "test":
        lo, hi = 0, num_slots - w
    else:
        cut = int(np.floor((1.0 - val_fraction) * num_slots))
        lo, hi = (0, cut - w) if part == "train" else (cut, num_slots - w)
    return np.arange(lo, hi + 1, stride, dtype=np.int64) if hi >= lo else np.zeros(0, np.int64)


def complete_in_windows(observed: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``[P, S] bool``: pedestrian p is annotated at all 20 slots of the window starting at ``starts[s]``."""
    counts = np.concatenate([np.zeros((observed.shape[0], 1), np.int64), np.cumsum(observed, axis=1)], axis=1)
    return (counts[:, starts + fmt.NUM_STEPS] - counts[:, starts]) == fmt.NUM_STEPS


def present_in_windows(observed: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``[P, S] bool``: pedestrian p is annotated at least once in the window starting at ``starts[s]``."""
    counts = np.concatenate([np.zeros((observed.shape[0], 1), np.int64), np.cumsum(observed, axis=1)], axis=1)
    return (counts[:, starts + fmt.NUM_STEPS] - counts[:, starts]) > 0


class EthUcyConverter(SceneConverter):
    """Converter for the ETH/UCY recordings (every convention is in the module docstring).

    Args:
        raw_root: the folder holding the recordings' ``.txt`` files.
        split: ``{fold}_{part}``: fold ``eth`` / ``hotel`` / ``univ`` / ``zara1`` / ``zara2``, part ``train`` /
            ``val`` / ``test``.
        window_stride: slots between the starts of consecutive windows (1: every slot).
        val_fraction: the tail of each training recording's span that forms ``val``, in (0, 1).
    """

    dataset = Dataset.ETH_UCY

    def __init__(self, raw_root: str | Path, split: str, window_stride: int = 1, val_fraction: float = 0.2) -> None:
        super().__init__(raw_root, split)
        self.fold, self.part = fmt.parse_split(split)
        if int(window_stride) != window_stride or window_stride < 1:
            raise ValueError(f"window_stride must be an integer >= 1, got {window_stride!r}")
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
        self.window_stride = int(window_stride)
        self.val_fraction = float(val_fraction)

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "fold": self.fold,
            "part": self.part,
            "recordings": list(self.recordings()),
            "window_stride": self.window_stride,
            "val_fraction": self.val_fraction,
            "num_steps": fmt.NUM_STEPS,
            "current_step": fmt.CURRENT_STEP,
            "dt": fmt.DT,
        }

    def recordings(self) -> tuple[str, ...]:
        """The file stems this split reads."""
        return fmt.fold_recordings(self.fold, self.part)

    def recording_path(self, stem: str) -> Path:
        return (self.raw_root / f"{stem}{fmt.FILE_SUFFIX}").absolute()

    def _recording(self, stem: str) -> Recording:
        path = self.recording_path(stem)
        if not path.is_file():
            expected = ", ".join(f"{s}{fmt.FILE_SUFFIX}" for s in self.recordings())
            raise FileNotFoundError(f"{path}: no such ETH/UCY recording (split {self.split} reads {expected})")
        try:
            return load_recording(path)
        except UnicodeDecodeError as exc:
            raise FormatError(path, f"not UTF-8 text: {exc}") from None

    def _windows(self, rec: Recording) -> tuple[np.ndarray, np.ndarray]:
        """The part's window starts on ``rec``'s grid and which pedestrians are complete in each."""
        starts = window_starts(rec.num_slots, self.part, self.val_fraction, self.window_stride)
        return starts, complete_in_windows(rec.observed, starts)

    def list_items(self) -> list[str]:
        """``{recording}:{start frame}`` of every window with a complete pedestrian, by recording then frame."""
        items = []
        for stem in sorted(self.recordings()):
            rec = self._recording(stem)
            starts, complete = self._windows(rec)
            for s in starts[complete.any(axis=0)].tolist():
                items.append(f"{stem}:{rec.frame(s):07d}")
        return items

    def item_path(self, item: str) -> Path:
        return self.recording_path(item.partition(":")[0])

    def accounting(self) -> dict[str, Any]:
        """Where every pedestrian of the split's recordings went (module docstring); totals under ``"all"``."""
        per_recording: dict[str, dict[str, int]] = {}
        for stem in sorted(self.recordings()):
            rec = self._recording(stem)
            starts, complete = self._windows(rec)
            present = present_in_windows(rec.observed, starts)
            scored = complete.any(axis=1)
            context = present.any(axis=1) & ~scored
            short = rec.observed.sum(axis=1) < fmt.NUM_STEPS
            per_recording[stem] = {
                "num_pedestrians": len(rec.ped_ids),
                "scored": int(scored.sum()),
                "context_only": int(context.sum()),
                "shorter_than_window": int((context & short).sum()),
                "outside": int((~present.any(axis=1)).sum()),
                "num_windows": len(starts),
                "windows_without_complete_pedestrian": int((~complete.any(axis=0)).sum()),
                "num_annotations": int(rec.observed.sum()),
            }
        keys = next(iter(per_recording.values())).keys() if per_recording else ()
        total = {k: sum(r[k] for r in per_recording.values()) for k in keys}
        return {"recordings": per_recording, "all": total}

    def convert(self, item: str) -> ConvertedScene:
        stem, _, frame_text = item.partition(":")
        path = self.recording_path(stem)
        rec = self._recording(stem)
        start = (int(frame_text) - rec.first_frame) // fmt.FRAME_STEP
        window = slice(start, start + fmt.NUM_STEPS)
        observed = rec.observed[:, window]
        keep = np.flatnonzero(observed.any(axis=1))
        observed = observed[keep]
        xy = rec.xy[keep, window]
        complete = observed.all(axis=1)
        role = np.where(complete, AgentRole.SCORED, AgentRole.UNSCORED).astype(np.int8)
        focal = int(np.flatnonzero(complete)[0])  # listed windows have one; ids ascend, so the smallest id
        role[focal] = AgentRole.FOCAL
        cs = fmt.CURRENT_STEP
        origin = np.array([xy[focal, cs, 0], xy[focal, cs, 1], 0.0], np.float64)
        relative = np.where(observed[..., None], xy - origin[:2], 0.0)
        times = np.arange(fmt.NUM_STEPS, dtype=np.float64) * fmt.DT
        velocity, heading = motion_from_positions(relative, observed, times, cs, HEADING_MIN_DISPLACEMENT)
        n = len(keep)
        position = np.zeros((n, fmt.NUM_STEPS, 3), np.float32)
        position[..., :2] = relative
        agents = AgentTracks(
            ids=[str(int(p)) for p in rec.ped_ids[keep]],
            type=np.full(n, AgentType.PEDESTRIAN, np.int8),
            role=role,
            is_sdc=np.zeros(n, bool),
            position=position,
            heading=heading.astype(np.float32),
            velocity=velocity.astype(np.float32),
            valid=observed.copy(),
        )
        scene = Scene(
            scenario_id=f"{stem}_{int(frame_text):07d}",
            dataset=Dataset.ETH_UCY,
            city=stem,
            num_steps=fmt.NUM_STEPS,
            current_step=cs,
            origin=origin,
            agents=agents,
            map=MapData.empty(),
            dt=fmt.DT,
        )
        return validated(scene, path, [])


__all__ = ["HEADING_MIN_DISPLACEMENT", "EthUcyConverter", "Recording", "load_recording", "recording_grid"]
