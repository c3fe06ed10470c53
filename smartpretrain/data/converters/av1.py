"""Argoverse 1 motion-forecasting CSVs -> :class:`~smartpretrain.data.scene.Scene`.

Raw layout (the format itself: :mod:`smartpretrain.data.formats.av1`): ``{raw_root}/{split}/data/{seq_id}.csv``
with columns ``TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME``; 50 steps at 10 Hz (20 history + 30 future; the test
split has only the 20 history steps: use ``num_steps=20``). ``OBJECT_TYPE`` is ``AGENT`` (the focal track, exactly
one), ``AV`` (the self-driving car) or ``OTHERS``. Optional city vector maps: see
:mod:`smartpretrain.data.converters.av1_map`.

Reading. One ``pyarrow.csv.read_csv`` with explicit column types (:func:`~smartpretrain.data.formats.av1.read_csv`:
TIMESTAMP / X / Y float64; TRACK_ID, OBJECT_TYPE, CITY_NAME as dictionary-encoded strings, whose codes the reader
builds while parsing), then vectorised numpy; no per-row Python. About 1.5-2 ms per file on one core (579 val
files, maps off).

Timeline. Timestamps are not on a 0.1 s grid (gaps of 0.01-0.45 s occur between consecutive frames, and every
row of a frame carries the frame's timestamp), and tracks have gaps. So a row's step is the rank of its
timestamp among the scene's sorted distinct timestamps; a scene with a number of distinct timestamps other than
``num_steps`` is dropped (WRONG_NUM_STEPS). ``Scene.dt`` stays the nominal 0.1 s.

Agents. Order: the focal track (``AGENT``) first, then the ``AV`` track(s), then every other track, each group in
order of first appearance in the (timestamp-sorted) file. ``ids`` are the ``TRACK_ID`` strings; ``type`` maps
``OBJECT_TYPE`` through :data:`~smartpretrain.data.taxonomy.AV1_AGENT_TYPES` (an unknown label becomes UNKNOWN and
is reported as one ``UNKNOWN_OBJECT_TYPE`` repair per label, ``count`` = its number of tracks). Roles: AV1 has no
scored / fragment notion, so ``AGENT`` is FOCAL and every other track is UNSCORED. ``is_sdc`` is
``OBJECT_TYPE == "AV"``. AV1 has no sizes (``size=None``) and no z (z = 0). The origin is the focal agent's
position at ``current_step`` (float64, z = 0); positions are float32 relative to it.

Velocity and heading. AV1 records neither; both are derived from positions (see :func:`motion_from_positions`):

* velocity at an observed step t = (p_t - p_s) / (tau_t - tau_s) with s the track's previous observed step and
  tau the *actual* timestamps (so jittered frames and gaps give the right m/s, not displacement / 0.1). At a
  track's first observed step: the forward difference to its next observed step. Observed once: 0.
* heading at an observed step t = atan2 of the displacement p_t - p_s, where s is the most recent earlier
  observed step at least ``HEADING_MIN_DISPLACEMENT`` = 1.0 m away from p_t ("distance-gated chord"). For an
  agent moving >= 10 m/s this is exactly the direction of the velocity; slower agents look further back until
  they have moved 1 m. Why not a speed threshold on the one-step velocity: AV1 positions are detection
  centroids whose frame-to-frame jitter for *parked* objects is 4 cm median, 18 cm at the 90th and 42 cm at the
  99th percentile (0.35 / 1.7 / 4 m/s as a one-step speed; 300 val files, tracks staying within 0.5 m of their
  mean), so any speed threshold low enough to keep slow agents turns jitter into random headings. Against a
  smoothed reference (direction of p_{t+10} - p_{t-10} for agents covering > 4 m in those 2 s; all 579 val
  files) the 1 m chord errs by 1.2 / 6.4 / 23 degrees (median / 90th / 99th percentile), the one-step velocity
  direction with a 0.2-2 m/s speed threshold by 1.8 / 11 / 93-131 degrees; a 0.5 m chord gives 1.6 / 8.3 / 35
  and a 2 m chord 0.8 / 4.9 / 18 at the price of looking twice as far back. Steps with no such chord (the agent
  has not yet moved 1 m, or stands still) carry the last chord heading forward; steps before a track's first
  chord heading take that first heading (backward fill); a track that never moves 1 m has heading 0 (unknowable:
  AV1 has no yaw). Velocity is not smoothed: over a short frame (0.01-0.05 s occur) its jitter is amplified.
* No leak of the future into the past: a value at a step <= ``current_step`` never depends on a position after
  ``current_step`` (the forward difference and the backward fill look ahead only within the history, resp.
  within the future), so history features stay causal. Unobserved steps: valid False, all values 0.

Errors name the file: unreadable / unparsable CSV or non-constant ``CITY_NAME`` or a track with several
``OBJECT_TYPE``s -> CORRUPT_FILE; missing columns -> MISSING_COLUMNS; zero bytes or header only -> EMPTY_FILE; NaN /
inf / empty X or Y -> NON_FINITE_VALUES; no ``AGENT`` track, or the ``AGENT`` not observed at ``current_step`` ->
NO_FOCAL_AGENT; several ``AGENT`` track ids -> MULTIPLE_FOCAL_AGENTS; two rows with the same (TRACK_ID, TIMESTAMP)
-> DUPLICATE_ROWS. Rows not sorted by timestamp are sorted (stable) and reported as a ``ROWS_OUT_OF_ORDER`` repair;
the scene is then identical to the one of the sorted file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from smartpretrain.data.converters.av1_map import load_av1_city_maps
from smartpretrain.data.converters.base import (
    ConversionError,
    ConvertedScene,
    DropReason,
    Repair,
    RepairKind,
    SceneConverter,
    map_labels,
    read_raw,
    validated,
)
from smartpretrain.data.formats import av1
from smartpretrain.data.scene import AgentTracks, MapData, Scene
from smartpretrain.data.taxonomy import AV1_AGENT_TYPES, AgentRole, AgentType, Dataset

# Chord length (m) a track must cover before its direction of motion counts as its heading (module docstring).
HEADING_MIN_DISPLACEMENT = 1.0


class Av1Converter(SceneConverter):
    """Converter for the Argoverse 1 forecasting CSV layout (see the module docstring for every convention).

    Args:
        raw_root: folder holding ``{split}/data/*.csv``.
        split: ``train`` / ``val`` / ``test`` (or any folder name).
        num_steps: distinct timestamps a scene must have (50; 20 for the test split).
        current_step: the present step (19), where the focal agent must be observed; the origin is taken there.
        map_root: folder with ``pruned_argoverse_{CITY}_{ID}_vector_map.xml``; None = map-less scenes.
        map_radius: lanes with a centerline point within this many metres of the focal agent's current position
            are attached to the scene.
    """

    dataset = Dataset.AV1

    def __init__(
        self,
        raw_root: str | Path,
        split: str,
        num_steps: int = av1.NUM_STEPS,
        current_step: int = av1.CURRENT_STEP,
        map_root: str | Path | None = None,
        map_radius: float = 100.0,
    ) -> None:
        super().__init__(raw_root, split)
        if not 0 <= current_step < num_steps:
            raise ValueError(f"current_step {current_step} must lie in [0, num_steps={num_steps})")
        if map_radius <= 0:
            raise ValueError(f"map_radius must be positive, got {map_radius}")
        self.num_steps = int(num_steps)
        self.current_step = int(current_step)
        self.map_root = Path(map_root) if map_root is not None else None
        self.map_radius = float(map_radius)

    @property
    def data_dir(self) -> Path:
        return av1.split_folder(self.raw_root, self.split)

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "num_steps": self.num_steps,
            "current_step": self.current_step,
            "map_root": None if self.map_root is None else str(self.map_root),
            "map_radius": self.map_radius,
        }

    def list_items(self) -> list[str]:
        """``{split}/data/{name}.csv`` relative to ``raw_root``; numeric order when every stem is an integer."""
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"{self.data_dir}: no such AV1 folder (expected {{raw_root}}/{{split}}/data/)")
        with os.scandir(self.data_dir) as entries:
            names = [e.name for e in entries if e.name.endswith(".csv") and e.is_file()]
        stems = [name[:-4] for name in names]
        if all(s.isascii() and s.isdigit() for s in stems):
            names.sort(key=lambda name: (int(name[:-4]), name))
        else:
            names.sort()
        prefix = f"{self.split}/{av1.DATA_FOLDER}/"
        return [prefix + name for name in names]

    def item_path(self, item: str) -> Path:
        return (self.raw_root / item).absolute()

    def item_files(self, item: str) -> list[Path]:
        """The CSV, plus every vector map of ``map_root`` when set (the city is only known after reading the CSV)."""
        files = [self.item_path(item)]
        if self.map_root is not None:
            files += sorted(self.map_root.glob("*.xml"))  # what load_av1_city_maps parses
        return files

    def convert(self, item: str) -> ConvertedScene:
        path = self.item_path(item)
        scenario_id = path.stem
        repairs: list[Repair] = []
        agents, origin, city = self._read_tracks(path, scenario_id, repairs)
        map_data = self._scene_map(path, scenario_id, city, origin)
        scene = Scene(
            scenario_id=scenario_id,
            dataset=Dataset.AV1,
            city=city,
            num_steps=self.num_steps,
            current_step=self.current_step,
            origin=origin,
            agents=agents,
            map=map_data,
        )
        return validated(scene, path, repairs)

    def _scene_map(self, path: Path, scenario_id: str, city: str, origin: np.ndarray) -> MapData:
        if self.map_root is None:
            return MapData.empty()
        city_map = load_av1_city_maps(self.map_root).get(city)
        if city_map is None:
            raise ConversionError(
                DropReason.BAD_MAP, path, f"no vector map for city {city} in map_root {self.map_root}", scenario_id
            )
        return city_map.scene_map(origin[:2], self.map_radius, origin)

    def _read_tracks(self, path: Path, sid: str, repairs: list[Repair]) -> tuple[AgentTracks, np.ndarray, str]:
        t_count, cs = self.num_steps, self.current_step

        def fail(reason: DropReason, message: str) -> ConversionError:
            return ConversionError(reason, path, message, sid)

        data = read_raw(path, "CSV", sid)
        if not data.strip():
            raise fail(DropReason.EMPTY_FILE, "zero-byte (or blank) CSV")
        try:
            table = av1.read_csv(data)
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            raise fail(DropReason.CORRUPT_FILE, f"cannot parse CSV: {exc}") from None
        missing = [c for c in av1.COLUMNS if c not in table.column_names]
        if missing:
            raise fail(DropReason.MISSING_COLUMNS, f"missing columns {missing} (header: {table.column_names})")
        if table.num_rows == 0:
            raise fail(DropReason.EMPTY_FILE, "header only, no rows")

        ts = table.column("TIMESTAMP").to_numpy()
        xy = np.stack([table.column("X").to_numpy(), table.column("Y").to_numpy()], axis=1)
        if not np.isfinite(ts).all():
            raise fail(DropReason.CORRUPT_FILE, f"{int((~np.isfinite(ts)).sum())} rows with empty/NaN/inf TIMESTAMP")
        finite = np.isfinite(xy).all(axis=1)
        if not finite.all():
            raise fail(DropReason.NON_FINITE_VALUES, f"{int((~finite).sum())} rows with empty/NaN/inf X or Y")
        if any(col.num_chunks > 1 for col in table.columns):
            table = table.unify_dictionaries()
        cities = table.column("CITY_NAME").combine_chunks().dictionary.to_pylist()
        if len(cities) != 1:
            raise fail(DropReason.CORRUPT_FILE, f"CITY_NAME is not constant: {sorted(cities)}")
        city = str(cities[0])

        track_enc = table.column("TRACK_ID").combine_chunks()
        track_ids: list[str] = track_enc.dictionary.to_pylist()
        code = track_enc.indices.to_numpy().astype(np.int64)
        label_enc = table.column("OBJECT_TYPE").combine_chunks()
        labels: list[str] = label_enc.dictionary.to_pylist()
        label = label_enc.indices.to_numpy().astype(np.int64)

        backwards = ts[1:] < ts[:-1]
        if backwards.any():
            order = np.argsort(ts, kind="stable")
            ts, xy, code, label = ts[order], xy[order], code[order], label[order]
            repairs.append(
                Repair(
                    RepairKind.ROWS_OUT_OF_ORDER,
                    str(path),
                    f"{int(backwards.sum())} rows have a smaller TIMESTAMP than the row before; rows sorted",
                )
            )

        # Step = rank of the row's timestamp among the sorted distinct timestamps (rows are sorted by now).
        new_frame = ts[1:] != ts[:-1]
        step = np.zeros(len(ts), np.int64)
        np.cumsum(new_frame, out=step[1:])
        times = ts[np.concatenate([[True], new_frame])]
        if len(times) != t_count:
            raise fail(DropReason.WRONG_NUM_STEPS, f"{len(times)} distinct timestamps, expected {t_count}")

        # Per-track label (from the track's first row) and agent order: focal, AV, others, by first appearance.
        n = len(track_ids)
        _, first_row = np.unique(code, return_index=True)
        track_label = label[first_row]
        mixed = label != track_label[code]
        if mixed.any():
            tid = track_ids[int(code[np.flatnonzero(mixed)[0]])]
            raise fail(DropReason.CORRUPT_FILE, f"track {tid!r} has rows with different OBJECT_TYPEs")
        focal_code = labels.index(av1.FOCAL_LABEL) if av1.FOCAL_LABEL in labels else -1
        focal_tracks = np.flatnonzero(track_label == focal_code)
        if len(focal_tracks) == 0:
            raise fail(DropReason.NO_FOCAL_AGENT, f"no track has OBJECT_TYPE {av1.FOCAL_LABEL}")
        if len(focal_tracks) > 1:
            ids = [track_ids[i] for i in focal_tracks]
            raise fail(DropReason.MULTIPLE_FOCAL_AGENTS, f"{len(ids)} tracks have OBJECT_TYPE {av1.FOCAL_LABEL}: {ids}")
        focal = int(focal_tracks[0])
        sdc_code = labels.index(av1.SDC_LABEL) if av1.SDC_LABEL in labels else -1
        appearance = np.argsort(first_row, kind="stable")
        rest = appearance[appearance != focal]
        rest_sdc = track_label[rest] == sdc_code
        order = np.concatenate([[focal], rest[rest_sdc], rest[~rest_sdc]]).astype(np.int64)
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)

        flat = rank[code] * t_count + step
        counts = np.bincount(flat, minlength=n * t_count)
        if counts.max() > 1:
            k = int(np.flatnonzero(counts > 1)[0])
            tid, dup_t = track_ids[int(order[k // t_count])], times[k % t_count]
            raise fail(
                DropReason.DUPLICATE_ROWS,
                f"{int((counts > 1).sum())} duplicate (TRACK_ID, TIMESTAMP) pairs, e.g. ({tid!r}, {dup_t!r})",
            )
        valid = (counts > 0).reshape(n, t_count)
        if not valid[0, cs]:
            raise fail(
                DropReason.NO_FOCAL_AGENT,
                f"focal track {track_ids[focal]!r} ({av1.FOCAL_LABEL}) is not observed at current step {cs}",
            )
        origin_xy = xy[int(np.flatnonzero(flat == cs)[0])]
        origin = np.array([origin_xy[0], origin_xy[1], 0.0], dtype=np.float64)
        rel = np.zeros((n * t_count, 2), np.float64)
        rel[flat] = xy - origin_xy
        rel = rel.reshape(n, t_count, 2)
        velocity, heading = motion_from_positions(rel, valid, times, cs)
        position = np.zeros((n, t_count, 3), np.float32)
        position[..., :2] = rel

        label_type, unknown = map_labels(AV1_AGENT_TYPES, labels, AgentType.UNKNOWN)
        for k in unknown:
            num_tracks = int((track_label == k).sum())
            repairs.append(Repair(RepairKind.UNKNOWN_OBJECT_TYPE, str(path), labels[k], count=num_tracks))
        ordered_label = track_label[order]
        role = np.full(n, AgentRole.UNSCORED, np.int8)
        role[0] = AgentRole.FOCAL
        agents = AgentTracks(
            ids=[track_ids[i] for i in order],
            type=label_type[ordered_label],
            role=role,
            is_sdc=ordered_label == sdc_code,
            position=position,
            heading=heading.astype(np.float32),
            velocity=velocity.astype(np.float32),
            valid=valid,
            size=None,
        )
        return agents, origin, city


def motion_from_positions(
    position: np.ndarray,
    valid: np.ndarray,
    times: np.ndarray,
    current_step: int,
    min_displacement: float = HEADING_MIN_DISPLACEMENT,
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity ``[N, T, 2]`` and heading ``[N, T]`` (float64) from positions ``[N, T, 2]`` observed at ``valid``.

    ``times`` ``[T]`` are the steps' actual timestamps (strictly increasing). The method (finite differences over
    actual time; distance-gated chord heading with forward / backward fill; no look-ahead across
    ``current_step``) is described in the module docstring. Unobserved steps get 0.
    """
    n, t = valid.shape
    steps = np.arange(t)
    flat_pos = position.reshape(n * t, 2)
    row = (np.arange(n, dtype=np.int64) * t)[:, None]

    # Previous observed step (< t; may be anywhere before: causal) and next observed step (> t, but a history
    # step only looks ahead within the history).
    last_upto = np.maximum.accumulate(np.where(valid, steps, -1), axis=1)
    prev = np.full((n, t), -1, np.int64)
    prev[:, 1:] = last_upto[:, :-1]
    first_from = np.minimum.accumulate(np.where(valid, steps, t)[:, ::-1], axis=1)[:, ::-1]
    nxt = np.full((n, t), t, np.int64)
    nxt[:, :-1] = first_from[:, 1:]
    nxt[:, : current_step + 1][nxt[:, : current_step + 1] > current_step] = t

    backward = valid & (prev >= 0)
    forward = valid & ~backward & (nxt < t)
    moved = backward | forward
    src = np.where(backward, prev, steps)
    dst = np.where(forward, nxt, steps)
    dt = np.where(moved, times[dst] - times[src], 1.0)
    velocity = flat_pos[(row + dst).ravel()] - flat_pos[(row + src).ravel()]
    velocity /= dt.reshape(-1, 1)
    velocity = velocity.reshape(n, t, 2)  # 0 where not moved: src == dst there

    # Chord heading: the most recent earlier observed step s at least min_displacement from p_t. Only tracks
    # whose observed positions span min_displacement can have one; unobserved positions are NaN so that every
    # comparison with them is False. score[i, t, s] = s + 1 where s < t and |p_t - p_s| >= d, else 0.
    heading = np.zeros((n, t), np.float64)
    x = np.where(valid, position[..., 0], np.nan)
    y = np.where(valid, position[..., 1], np.nan)
    span_x = np.fmax.reduce(x, axis=1) - np.fmin.reduce(x, axis=1)
    span = np.hypot(span_x, np.fmax.reduce(y, axis=1) - np.fmin.reduce(y, axis=1))
    mobile = np.flatnonzero(span >= min_displacement)
    if not len(mobile):
        return velocity, heading
    xm, ym = x[mobile], y[mobile]
    dx = xm[:, :, None] - xm[:, None, :]
    dy = ym[:, :, None] - ym[:, None, :]
    dx *= dx
    dy *= dy
    dx += dy
    score = (dx >= min_displacement**2) * _chord_weights(t)
    latest = score.max(axis=2).astype(np.int64) - 1  # -1: no chord at this step
    has_chord = latest >= 0
    mrow = (mobile * t)[:, None]
    chord = flat_pos[(mrow + steps).ravel()] - flat_pos[(mrow + np.maximum(latest, 0)).ravel()]
    raw_heading = np.arctan2(chord[:, 1], chord[:, 0]).reshape(len(mobile), t)

    # Fill: carry the last chord heading forward; before the first one, take the next one (within the segment).
    last_chord = np.maximum.accumulate(np.where(has_chord, steps, -1), axis=1)
    next_chord = np.minimum.accumulate(np.where(has_chord, steps, t)[:, ::-1], axis=1)[:, ::-1]
    next_chord[:, : current_step + 1][next_chord[:, : current_step + 1] > current_step] = t
    source = np.where(last_chord >= 0, last_chord, np.where(next_chord < t, next_chord, -1))
    known = valid[mobile] & (source >= 0)
    filled = np.take_along_axis(raw_heading, np.maximum(source, 0), axis=1)
    heading[mobile] = np.where(known, filled, 0.0)
    return velocity, heading


_WEIGHTS: dict[int, np.ndarray] = {}


def _chord_weights(t: int) -> np.ndarray:
    """``[t, t]``: ``s + 1`` below the diagonal (s < t), 0 elsewhere; int16 (small products), cached per t."""
    w = _WEIGHTS.get(t)
    if w is None:
        dtype = np.int16 if t < np.iinfo(np.int16).max else np.int64
        w = np.tril(np.broadcast_to(np.arange(1, t + 1, dtype=dtype), (t, t)), -1).copy()
        _WEIGHTS[t] = w
    return w
