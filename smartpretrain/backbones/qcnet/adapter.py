"""Scene -> QCNet's input HeteroData (the reference AV2 preprocessing, on any unified Scene).

The window is anchored at ``scene.current_step``: history = steps ``current_step - H + 1 .. current_step``
(window index ``0 .. H - 1``), future = ``current_step + 1 .. current_step + F`` (window index ``H .. H + F - 1``).
Window steps outside the scene's timeline are unobserved, so a view sampler may move ``current_step`` freely.

Agents (QCNet's rules): only agents observed at some history step are kept, in scene order. ``valid_mask``
marks a history step valid iff the agent is observed there and at the step before (step 0 is never valid),
a future step iff observed. ``predict_mask`` is the observed future steps, all False for an agent unobserved
at the current step (window index ``H - 1``). A scene without any future (a test split: its timeline ends at
the current step) predicts, as the reference's test split does, every future step of the agents observed at the
current step and of the scored and focal agents. ``target`` is the future (x, y, z, heading) in the agent's frame
at ``H - 1`` (heading wrapped to [-pi, pi)), 0 where not observed or not predicted.

Map (QCNet's AV2 conventions, which published checkpoints were trained with):

* a lane is one polygon; its points are the left boundary, the right boundary and the centerline, each without
  its last point. With ``centerline="stored"`` (the default, as the reference preprocessing) the centerline is the
  Scene's CENTER polyline, i.e. the one stored in the map file (AV2 ``log_map_archive``: 2 to 33 points per lane
  on the fixture); a lane without one falls back to av2's midpoint line of its boundaries (the AV2 converter
  stores that midpoint already for lanes whose file entry has no centerline). With ``"av2_midpoint"`` every lane
  gets av2's ``compute_midpoint_line`` of its boundaries (10 points, reproduced here in a vectorised form,
  including the pivot case of a one-point boundary), which is what ``ArgoverseStaticMap.
  get_lane_segment_centerline`` returns, not what published QCNet checkpoints saw. The polygon sits at
  ``centerline[0]`` and points along ``centerline[1] - centerline[0]``.
* a crosswalk is two polygons, one per walking direction (all first directions after the lanes, then all
  second directions); the centerline is the midpoint line of its edges with ``ceil(|end - start| / 2) + 1``
  points.
* point features: position, orientation / magnitude (xy) / height (z) of the vector to the next point.
* polygon types are PolygonType 0..3 (= QCNet's VEHICLE, BIKE, BUS, PEDESTRIAN); ``is_intersection`` uses
  QCNet's class order (0 = True, 1 = False, 2 = None); point types are LineType 0..16 (= QCNet's order), sides
  Side 0..2; topology edge types are EdgeType 1..4 (= QCNet's PRED, SUCC, LEFT, RIGHT), src -> dst as in the Scene.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch, HeteroData

from smartpretrain.backbones.base import DESCRIPTION_KEY, BatchDescription
from smartpretrain.data.scene import MapData, Scene
from smartpretrain.data.taxonomy import AgentRole, Intersection, LineType, PolygonType, Side

__all__ = ["QCNetAdapter", "interp_arc_batch", "midpoint_lines_batch", "wrap_angle_np"]

#: av2's ``NUM_CENTERLINE_INTERP_PTS``: points of a lane's midpoint centerline
NUM_CENTERLINE_POINTS = 10
CENTERLINE_MODES = ("stored", "av2_midpoint")

# our Intersection value -> QCNet's is_intersection class ([True, False, None])
_INTERSECTION_TO_QCNET = np.zeros(len(Intersection), np.int64)
_INTERSECTION_TO_QCNET[Intersection.YES] = 0
_INTERSECTION_TO_QCNET[Intersection.NO] = 1
_INTERSECTION_TO_QCNET[Intersection.UNKNOWN] = 2
_QCNET_INTERSECTION_NONE = 2

_LANE_TYPES = (PolygonType.VEHICLE_LANE, PolygonType.BIKE_LANE, PolygonType.BUS_LANE)


def wrap_angle_np(angle: np.ndarray) -> np.ndarray:
    """QCNet's ``wrap_angle``: ``-pi + (angle + pi) mod 2 pi``, in [-pi, pi)."""
    return -math.pi + np.mod(angle + math.pi, 2.0 * math.pi)


def interp_arc_batch(points: np.ndarray, starts: np.ndarray, lengths: np.ndarray, num: np.ndarray) -> np.ndarray:
    """av2's ``interp_arc`` on many polylines at once.

    Polyline ``r`` is ``points[starts[r] : starts[r] + lengths[r]]`` (``lengths >= 2``); it is resampled into
    ``num[r]`` points equally spaced in (chordal) arc length, exactly as ``av2.geometry.interpolate.interp_arc``
    does (same bin search, same end-point catches), except that where av2 divides by a zero-length segment
    and returns NaN (a repeated first / last point), the segment's start point is returned.
    Returns ``[R, max(num), D]``; row ``r`` beyond ``num[r]`` repeats its last point.
    """
    starts, lengths, num = (np.asarray(a, np.int64) for a in (starts, lengths, num))
    r = len(starts)
    if r == 0:
        return np.zeros((0, 0, points.shape[1]), points.dtype)
    n_max, t_max = int(lengths.max()), int(num.max())
    rows = np.arange(r)[:, None]
    # pad each polyline by repeating its last point: padded segments have zero length and add nothing
    j = np.arange(n_max)
    x = points[starts[:, None] + np.minimum(j, lengths[:, None] - 1)]  # [R, N, D]
    chord = np.linalg.norm(np.diff(x, axis=1), axis=-1)  # [R, N-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        chord = chord / chord.sum(axis=1, keepdims=True)
    cumarc = np.zeros((r, n_max))
    cumarc[:, 1:] = np.cumsum(chord, axis=1)
    # np.linspace(0, 1, num): k * (1 / (num - 1)), last one exactly 1
    k = np.minimum(np.arange(t_max), num[:, None] - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(num > 1, 1.0 / (num - 1), 0.0)
    eq = k * step[:, None]
    eq[(k == num[:, None] - 1) & (num[:, None] > 1)] = 1.0
    # np.digitize on increasing bins = number of bins <= value (padded bins equal the last one)
    tbins = (cumarc[:, None, :] <= eq[:, :, None]).sum(axis=-1)  # [R, T]
    tbins[(tbins <= 0) | (eq <= 0)] = 1
    last = np.broadcast_to(lengths[:, None] - 1, tbins.shape)
    catch = (tbins >= lengths[:, None]) | (eq >= 1)
    tbins[catch] = last[catch]
    seg = chord[rows, tbins - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (eq - cumarc[rows, tbins - 1]) / seg
    # a zero-length first / last segment (repeated point) makes av2 return NaN; its anchor is the right point
    s[~(seg > 0)] = 0.0
    anchors = x[rows, tbins - 1]
    return anchors + (x[rows, tbins] - anchors) * s[..., None]


def midpoint_lines_batch(
    points: np.ndarray,
    left: tuple[np.ndarray, np.ndarray],
    right: tuple[np.ndarray, np.ndarray],
    num: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """av2's ``compute_midpoint_line`` on many (left, right) boundary pairs, given as (starts, lengths) into points.

    Both boundaries with >= 2 points: the mean of the two ``interp_arc(num)`` resamplings. A one-point boundary
    (av2's "pivot" / cul-de-sac case): the mean of that point with each point of the other boundary, as many
    points as the other boundary has (av2 returns that case in 2-D only; the z mean is kept here).
    Returns ``(lines [R, max_len, D], lengths [R])``; rows are padded by repeating their last point.
    """
    (ls, ll), (rs, rl) = left, right
    num = np.broadcast_to(np.asarray(num, np.int64), ls.shape)
    pivot = (ll == 1) | (rl == 1)
    lengths = np.where(ll == 1, rl, np.where(rl == 1, ll, num)).astype(np.int64)
    out = np.zeros((len(ls), int(lengths.max()) if len(ls) else 0, points.shape[1]))
    regular = np.flatnonzero(~pivot)
    if len(regular):
        both = interp_arc_batch(  # left and right boundaries in one pass
            points, np.r_[ls[regular], rs[regular]], np.r_[ll[regular], rl[regular]], np.r_[num[regular], num[regular]]
        )
        mid = (both[: len(regular)] + both[len(regular) :]) / 2.0
        out[regular, : mid.shape[1]] = mid
        out[regular, mid.shape[1] :] = mid[:, -1:]
    for i in np.flatnonzero(pivot):  # rare (cul-de-sacs); as in av2, a one-point left boundary is the pivot
        single, arc_start, arc_len = (ls[i], rs[i], rl[i]) if ll[i] == 1 else (rs[i], ls[i], ll[i])
        line = (points[single] + points[arc_start : arc_start + arc_len]) / 2.0
        out[i, : len(line)] = line
        out[i, len(line) :] = line[-1]
    return out, lengths


class QCNetAdapter:
    """Scene -> QCNet input :class:`HeteroData`; ``collate`` batches them with ``Batch.from_data_list``.

    Args:
        num_historical_steps: H, history steps ending at ``scene.current_step`` (included).
        num_future_steps: F, future steps after ``scene.current_step``.
        centerline: ``"stored"`` (the Scene's CENTER polyline, i.e. the map file's; the reference preprocessing;
            lanes without one fall back to the midpoint line) or ``"av2_midpoint"`` (av2's 10-point midpoint line
            of the lane boundaries; lanes without both boundaries fall back to the stored centerline).
        dim: 3 (positions and velocities ``[..., 3]``, as QCNet's AV2 dataset) or 2 (``[..., 2]``).
        pl2pl_radius: accepted for the model's ``make_adapter``; unused (the model builds its radius graphs).

    Output (T = H + F; float32 unless stated):

    * ``agent``: ``num_nodes`` A, ``agent_index [A] long`` (into ``scene.agents``), ``id`` (list of str),
      ``type [A] long`` (AgentType), ``category [A] long`` (AgentRole, 3 = focal), ``position [A, T, dim]``
      (scene frame; z as in the Scene, i.e. 0 for AV1 / AV2 as in QCNet), ``heading [A, T]``,
      ``velocity [A, T, dim]`` (z = 0), ``valid_mask`` / ``predict_mask [A, T] bool``, ``target [A, F, 4]``.
    * ``map_polygon``: ``num_nodes`` P, ``position [P, dim]``, ``orientation [P]``, ``height [P]`` (z rise of
      the first centerline segment: QCNet's polygon height, read with ``input_dim = 3``), ``type [P] long``,
      ``is_intersection [P] long``.
    * ``map_point``: ``num_nodes`` M, ``position [M, dim]``, ``orientation [M]``, ``magnitude [M]``,
      ``height [M]``, ``type [M] long``, ``side [M] long``.
    * ``(map_point, to, map_polygon).edge_index [2, M]``; ``(map_polygon, to, map_polygon).edge_index [2, E]``
      and ``.type [E] long``.
    * ``scenario_id``, ``dataset``, ``city`` (str), ``origin [1, 3] float64`` and ``current_step`` (int: the
      scene's present, window index ``H - 1``).
    * batches from :meth:`collate` also carry ``description``, their
      :class:`~smartpretrain.backbones.base.BatchDescription`.

    Map-less scenes give P = M = E = 0 with the same fields, so they batch with scenes that have a map.
    """

    def __init__(
        self,
        num_historical_steps: int = 50,
        num_future_steps: int = 60,
        centerline: str = "stored",
        dim: int = 3,
        pl2pl_radius: float | None = None,
    ) -> None:
        if num_historical_steps < 1 or num_future_steps < 0:
            raise ValueError(
                f"need num_historical_steps >= 1 and num_future_steps >= 0, got "
                f"{num_historical_steps}, {num_future_steps}"
            )
        if centerline not in CENTERLINE_MODES:
            raise ValueError(f"centerline must be one of {CENTERLINE_MODES}, got {centerline!r}")
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        self.num_historical_steps = int(num_historical_steps)
        self.num_future_steps = int(num_future_steps)
        self.centerline = centerline
        self.dim = int(dim)
        self.pl2pl_radius = pl2pl_radius

    def __repr__(self) -> str:
        return (
            f"QCNetAdapter(num_historical_steps={self.num_historical_steps}, "
            f"num_future_steps={self.num_future_steps}, centerline={self.centerline!r}, dim={self.dim})"
        )

    # ----------------------------------------------------------------------------------------------------------
    def __call__(self, scene: Scene) -> HeteroData:
        data = HeteroData()
        for key, value in self.agent_features(scene).items():
            data["agent"][key] = value
        map_features = self.map_features(scene.map)
        for node_type in ("map_polygon", "map_point"):
            for key, value in map_features[node_type].items():
                data[node_type][key] = value
        data["map_point", "to", "map_polygon"].edge_index = map_features["pt2pl_edge_index"]
        data["map_polygon", "to", "map_polygon"].edge_index = map_features["pl2pl_edge_index"]
        data["map_polygon", "to", "map_polygon"].type = map_features["pl2pl_type"]
        data.scenario_id = scene.scenario_id
        data.dataset = str(scene.dataset)
        data.city = scene.city
        data.origin = torch.from_numpy(np.asarray(scene.origin, np.float64).reshape(1, 3).copy())
        data.current_step = int(scene.current_step)
        return data

    def collate(self, samples: list[HeteroData]) -> Batch:
        """``Batch.from_data_list`` plus the batch's :class:`~smartpretrain.backbones.base.BatchDescription` as
        ``batch.description``: the agent rows are all agents of the batch, scene after scene (QCNet's
        ``Forecast`` / ``EvalTargets`` rows)."""
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        batch = Batch.from_data_list(samples)
        batch[DESCRIPTION_KEY] = BatchDescription.from_scenes(  # a global attribute: batch.description
            scenario_ids=[s.scenario_id for s in samples],
            datasets=[s.dataset for s in samples],
            origins=[s.origin for s in samples],
            current_steps=[s.current_step for s in samples],
            track_ids=[s["agent"].id for s in samples],
            agent_index=[s["agent"].agent_index for s in samples],
            agent_roles=[s["agent"].category for s in samples],
        )
        return batch

    # ----------------------------------------------------------------------------------------------------------
    def agent_features(self, scene: Scene) -> dict[str, Any]:
        h, f, d = self.num_historical_steps, self.num_future_steps, self.dim
        t_win = h + f
        a = scene.agents
        steps = scene.current_step - h + 1 + np.arange(t_win)
        inside = (steps >= 0) & (steps < scene.num_steps)
        src = np.clip(steps, 0, scene.num_steps - 1)

        keep = np.flatnonzero((a.valid[:, src[:h]] & inside[:h]).any(axis=1))
        n = len(keep)
        obs = a.valid[keep][:, src] & inside  # [A, T]
        position = np.zeros((n, t_win, d), np.float32)
        position[obs] = a.position[keep][:, src][obs][:, :d]
        heading = np.where(obs, a.heading[keep][:, src], np.float32(0.0)).astype(np.float32)
        velocity = np.zeros((n, t_win, d), np.float32)
        velocity[..., :2][obs] = a.velocity[keep][:, src][obs]

        valid_mask = obs.copy()
        valid_mask[:, 1:h] = obs[:, 1:h] & obs[:, : h - 1]
        valid_mask[:, 0] = False
        predict_mask = obs.copy()
        predict_mask[:, :h] = False
        predict_mask[~obs[:, h - 1]] = False
        if scene.current_step + 1 >= scene.num_steps:  # no future at all: a test split (the reference's rule)
            asked = obs[:, h - 1] | (a.role[keep] >= AgentRole.SCORED)
            predict_mask[asked, h:] = True

        # future in each agent's frame at step H-1 (QCNet's TargetBuilder), 0 where not predicted
        target = np.zeros((n, f, 4), np.float32)
        if n and f:
            origin, theta = position[:, h - 1], heading[:, h - 1].astype(np.float64)
            cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
            rel = position[:, h:].astype(np.float64) - origin[:, None]
            target[..., 0] = cos * rel[..., 0] + sin * rel[..., 1]
            target[..., 1] = -sin * rel[..., 0] + cos * rel[..., 1]
            if d == 3:
                target[..., 2] = rel[..., 2]
            target[..., 3] = wrap_angle_np(heading[:, h:].astype(np.float64) - theta[:, None])
            target[~(predict_mask[:, h:] & obs[:, h:])] = 0.0

        return {
            "num_nodes": n,
            "agent_index": torch.from_numpy(keep.astype(np.int64)),
            "id": [a.ids[i] for i in keep],
            "type": torch.from_numpy(a.type[keep].astype(np.int64)),
            "category": torch.from_numpy(a.role[keep].astype(np.int64)),
            "position": torch.from_numpy(position),
            "heading": torch.from_numpy(heading),
            "velocity": torch.from_numpy(velocity),
            "valid_mask": torch.from_numpy(valid_mask),
            "predict_mask": torch.from_numpy(predict_mask),
            "target": torch.from_numpy(target),
        }

    # ----------------------------------------------------------------------------------------------------------
    def map_features(self, m: MapData) -> dict[str, Any]:
        """The ``map_polygon`` / ``map_point`` stores and the two edge sets (see the module docstring)."""
        d, num_poly, num_lines = self.dim, m.num_polygons, m.num_polylines
        # polyline tables with a sentinel row ``num_lines`` (an empty polyline) for "no such polyline"
        starts = np.append(m.polyline_offsets[:-1], 0).astype(np.int64)
        lengths = np.append(np.diff(m.polyline_offsets), 0).astype(np.int64)
        line_types = np.append(m.polyline_type, 0).astype(np.int64)
        # first polyline of each (polygon, side)
        first = np.full((num_poly, 3), num_lines, np.int64)
        if num_lines:
            np.minimum.at(
                first, (m.polyline_polygon.astype(np.int64), m.polyline_side.astype(np.int64)), np.arange(num_lines)
            )
        first_len = lengths[first]  # [P, 3], 0 where absent
        left, right, center = Side.LEFT, Side.RIGHT, Side.CENTER

        # Road lines / edges, stop signs, ... (PolygonType >= 4, WOMD) are skipped for now: QCNet's AV2 polygon
        # classes have no slot for them. A crosswalk needs both edges with >= 2 points.
        ptype = m.polygon_type.astype(np.int64)
        lanes = np.flatnonzero(np.isin(ptype, _LANE_TYPES))
        crosswalks = np.flatnonzero(
            (ptype == PolygonType.CROSSWALK) & (first_len[:, left] >= 2) & (first_len[:, right] >= 2)
        )
        n_lane, n_cw = len(lanes), len(crosswalks)
        pts = m.points.astype(np.float64)
        buf, buf_size = [pts], len(pts)  # the scene's points, then the computed centerlines

        # --- lanes: polyline slots LEFT, RIGHT, CENTER as (start, length) into the buffer ------------------------
        lane_start, lane_len = starts[first[lanes]], first_len[lanes]  # [n_lane, 3]
        lane_type = line_types[first[lanes]]
        lane_type[:, center] = LineType.CENTERLINE
        both = (lane_len[:, left] > 0) & (lane_len[:, right] > 0)
        rows = np.flatnonzero(both & ((self.centerline == "av2_midpoint") | (lane_len[:, center] == 0)))
        if len(rows):
            mid, mid_len = midpoint_lines_batch(
                pts,
                (lane_start[rows, left], lane_len[rows, left]),
                (lane_start[rows, right], lane_len[rows, right]),
                np.full(len(rows), NUM_CENTERLINE_POINTS),
            )
            buf.append(mid.reshape(-1, 3))
            lane_start[rows, center] = buf_size + np.arange(len(rows)) * mid.shape[1]
            lane_len[rows, center] = mid_len
            buf_size += len(buf[-1])

        # --- crosswalks: two directions; edge1 is the left boundary of direction A iff strictly on the left of
        # start -> end (QCNet's side_to_directed_lineseg), direction B is A reversed -----------------------------
        e1s, e1n = starts[first[crosswalks, left]], first_len[crosswalks, left]
        e2s, e2n = starts[first[crosswalks, right]], first_len[crosswalks, right]
        start_pos = (pts[e1s] + pts[e2s]) / 2.0
        end_pos = (pts[e1s + e1n - 1] + pts[e2s + e2n - 1]) / 2.0
        seg, rel = end_pos - start_pos, (pts[e1s] + pts[e1s + e1n - 1]) / 2.0 - start_pos
        e1_left = (seg[:, 0] * rel[:, 1] - seg[:, 1] * rel[:, 0]) > 0
        cl_s, cl_n = np.where(e1_left, e1s, e2s), np.where(e1_left, e1n, e2n)
        cr_s, cr_n = np.where(e1_left, e2s, e1s), np.where(e1_left, e2n, e1n)
        cc_s, cc_n = np.zeros(n_cw, np.int64), np.zeros(n_cw, np.int64)
        if n_cw:
            num = np.ceil(np.linalg.norm(seg, axis=-1) / 2.0).astype(np.int64) + 1
            mid, cc_n = midpoint_lines_batch(pts, (cl_s, cl_n), (cr_s, cr_n), num)
            buf.append(mid.reshape(-1, 3))
            cc_s = buf_size + np.arange(n_cw) * mid.shape[1]
            buf_size += len(buf[-1])
        points = np.concatenate(buf) if len(buf) > 1 else pts

        # --- output polylines, in output polygon order: lanes, crosswalks (A), crosswalks (B) --------------------
        num_out = n_lane + 2 * n_cw
        pl_start = np.concatenate([lane_start, np.stack([cl_s, cr_s, cc_s], 1), np.stack([cr_s, cl_s, cc_s], 1)])
        pl_len = np.concatenate([lane_len, np.stack([cl_n, cr_n, cc_n], 1), np.stack([cr_n, cl_n, cc_n], 1)])
        cw_types = np.array([LineType.CROSSWALK, LineType.CROSSWALK, LineType.CENTERLINE], np.int64)
        pl_type = np.concatenate([lane_type, np.tile(cw_types, (2 * n_cw, 1))]).reshape(-1)
        pl_side = np.tile(np.array([Side.LEFT, Side.RIGHT, Side.CENTER], np.int64), num_out)
        pl_flip = np.repeat(np.arange(num_out) >= n_lane + n_cw, 3)
        pl_poly = np.repeat(np.arange(num_out), 3)
        pl_start, pl_len = pl_start.reshape(-1), pl_len.reshape(-1)

        # --- points: each polyline without its last point, with the vector to the next point --------------------
        cnt = np.maximum(pl_len - 1, 0)
        total = int(cnt.sum())
        which = np.repeat(np.arange(len(cnt)), cnt)
        j = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        s, n_pts = pl_start[which], pl_len[which]
        cur = np.where(pl_flip[which], s + n_pts - 1 - j, s + j)
        nxt = np.where(pl_flip[which], cur - 1, cur + 1)
        pt_pos = points[cur]
        vec = points[nxt] - pt_pos

        # --- polygons: lanes at centerline[0] along centerline[1] - centerline[0]; crosswalks start <-> end ------
        c_start, c_len = lane_start[:, center], lane_len[:, center]
        lane_pos = np.zeros((n_lane, 3))
        lane_vec = np.zeros((n_lane, 3))
        ok = c_len >= 1  # degenerate lanes without any centerline stay at 0 (never in AV2)
        lane_pos[ok] = points[c_start[ok]]
        ok = c_len >= 2
        lane_vec[ok] = points[c_start[ok] + 1] - points[c_start[ok]]
        pl_pos = np.concatenate([lane_pos, start_pos, end_pos])
        pl_vec = np.concatenate([lane_vec, seg, -seg])
        pl_kind = np.concatenate([ptype[lanes], np.full(2 * n_cw, PolygonType.CROSSWALK, np.int64)])
        pl_int = np.concatenate(
            [
                _INTERSECTION_TO_QCNET[m.polygon_is_intersection[lanes].astype(np.int64)],
                np.full(2 * n_cw, _QCNET_INTERSECTION_NONE, np.int64),
            ]
        )

        # --- topology: remap to output indices (a crosswalk -> its direction A), drop edges of skipped polygons --
        remap = np.full(num_poly, -1, np.int64)
        remap[lanes] = np.arange(n_lane)
        remap[crosswalks] = n_lane + np.arange(n_cw)
        ei = remap[m.edge_index.astype(np.int64)].reshape(2, -1)
        edge_ok = (ei >= 0).all(axis=0)

        f32 = np.float32
        return {
            "map_polygon": {
                "num_nodes": num_out,
                "position": torch.from_numpy(pl_pos[:, :d].astype(f32)),
                "orientation": torch.from_numpy(np.arctan2(pl_vec[:, 1], pl_vec[:, 0]).astype(f32)),
                "height": torch.from_numpy(pl_vec[:, 2].astype(f32)),
                "type": torch.from_numpy(pl_kind),
                "is_intersection": torch.from_numpy(pl_int),
            },
            "map_point": {
                "num_nodes": total,
                "position": torch.from_numpy(pt_pos[:, :d].astype(f32)),
                "orientation": torch.from_numpy(np.arctan2(vec[:, 1], vec[:, 0]).astype(f32)),
                "magnitude": torch.from_numpy(np.hypot(vec[:, 0], vec[:, 1]).astype(f32)),
                "height": torch.from_numpy(vec[:, 2].astype(f32)),
                "type": torch.from_numpy(pl_type[which]),
                "side": torch.from_numpy(pl_side[which]),
            },
            "pt2pl_edge_index": torch.from_numpy(np.stack([np.arange(total), pl_poly[which]])),
            "pl2pl_edge_index": torch.from_numpy(np.ascontiguousarray(ei[:, edge_ok])),
            "pl2pl_type": torch.from_numpy(m.edge_type[edge_ok].astype(np.int64)),
        }
