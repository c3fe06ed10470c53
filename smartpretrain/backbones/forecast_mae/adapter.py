"""Scene -> Forecast-MAE's agent-centric, fixed-size tensors (the reference ``Av2Extractor``, on any unified Scene).

Frame: origin at the focal agent's position at ``scene.current_step`` (the last history step, window index
``H - 1``), x along its heading there; every position is rotated by ``-theta`` about the origin, every heading
becomes ``wrap(heading - theta)``. When the focal agent is not observed at the current step (a temporal view
cut from a longer scene may end before it appears), the first agent observed there serves as the reference.

Window: history = steps ``current_step - H + 1 .. current_step``, future = the next F steps; steps outside the
scene's timeline are padded, so view samplers may move ``current_step`` freely.

Actors (reference rules): agents observed at the current step within ``radius`` of the origin; when the scene has
lanes, agents more than ``lane_distance`` from every lane point are dropped (map-less datasets skip that test);
the reference agent is always kept and comes first. Object types 5-9 (static, background, construction,
riderless bicycle, unknown) keep their history but their future is padded.

Lanes: lane polygons with a point within ``radius`` of the origin; the centreline is av2's midpoint of the left and
right boundaries resampled to ``lane_points`` points when the lane has both boundaries (AV2), else its stored
centreline resampled (AV1, WOMD). Points outside ``[-radius, radius]^2`` are padded and zeroed; lanes with every
point padded are dropped. Lane centre = mean of points 9 and 10, lane angle = direction from point 9 to 10.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from smartpretrain.backbones.base import DESCRIPTION_KEY, BatchDescription
from smartpretrain.backbones.qcnet.adapter import interp_arc_batch, midpoint_lines_batch
from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import AgentType, PolygonType, Side

__all__ = ["COMBINED_TYPES", "ForecastMAEAdapter", "ForecastMAEBatch"]

_LANE_TYPES = (PolygonType.VEHICLE_LANE, PolygonType.BIKE_LANE, PolygonType.BUS_LANE)
# types whose future is not supervised (the reference pads it): static, background, construction, riderless, unknown
_NO_FUTURE_TYPES = np.array([t >= AgentType.STATIC for t in AgentType])
#: AgentType -> the reference's 4 combined classes: vehicle + bus, pedestrian, motorcyclist + cyclist, other
COMBINED_TYPES = np.full(len(AgentType), 3, np.int64)
COMBINED_TYPES[[AgentType.VEHICLE, AgentType.BUS]] = 0
COMBINED_TYPES[AgentType.PEDESTRIAN] = 1
COMBINED_TYPES[[AgentType.MOTORCYCLIST, AgentType.CYCLIST]] = 2

# per-actor fields (padded over actors by collate) and per-lane fields (padded over lanes)
_ACTOR_FIELDS = (
    "x", "x_positions", "x_centers", "x_angles", "x_velocity", "x_velocity_diff", "x_attr", "x_padding_mask", "y",
    "agent_index", "role",
)  # fmt: skip
_LANE_FIELDS = ("lane_positions", "lane_centers", "lane_angles", "lane_padding_mask")


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


class ForecastMAEAdapter:
    """Scene -> dict of tensors for one scene; ``collate`` pads actors and lanes into a batch (see module doc).

    Args:
        num_historical_steps: H. num_future_steps: F.
        radius: metres around the origin for actors and lanes (reference 150).
        lane_distance: actors farther than this from every lane point are dropped (reference 5; maps only).
        lane_points: points per lane centreline (reference 20).

    One sample (N actors, M lanes): ``x [N, H, 2]`` per-step displacement (0 at step 0 and where either step is
    missing), ``x_positions [N, H, 2]``, ``x_centers [N, 2]`` (position at H-1), ``x_angles [N, H+F]`` headings
    relative to the frame, ``x_velocity [N, H+F]`` speeds, ``x_velocity_diff [N, H]``, ``x_attr [N, 3] long``
    (AgentType, AgentRole, combined type), ``x_padding_mask [N, H+F]`` (True = missing), ``y [N, F, 2]`` future
    minus the position at H-1 (0 where padded), ``agent_index [N] long`` (row in ``scene.agents``),
    ``track_ids`` (N str, ``scene.agents.ids`` of the actors), ``role [N]``;
    ``lane_positions [M, P, 2]``, ``lane_centers [M, 2]``, ``lane_angles [M]``, ``lane_padding_mask [M, P]``;
    ``frame_origin [2]`` and ``frame_theta`` (the frame in scene coordinates), ``scene_origin [3]`` (the scene's
    city-frame origin), ``scenario_id``, ``dataset``, ``current_step`` (int: the scene's present, window index
    ``H - 1``).
    """

    def __init__(
        self,
        num_historical_steps: int = 50,
        num_future_steps: int = 60,
        radius: float = 150.0,
        lane_distance: float = 5.0,
        lane_points: int = 20,
    ) -> None:
        if num_historical_steps < 2 or num_future_steps < 1 or lane_points < 11:
            raise ValueError(
                f"need num_historical_steps >= 2, num_future_steps >= 1, lane_points >= 11; got "
                f"{num_historical_steps}, {num_future_steps}, {lane_points}"
            )
        self.num_historical_steps = int(num_historical_steps)
        self.num_future_steps = int(num_future_steps)
        self.radius = float(radius)
        self.lane_distance = float(lane_distance)
        self.lane_points = int(lane_points)

    def __repr__(self) -> str:
        return (
            f"ForecastMAEAdapter(num_historical_steps={self.num_historical_steps}, "
            f"num_future_steps={self.num_future_steps}, radius={self.radius})"
        )

    # ----------------------------------------------------------------------------------------------------------
    def __call__(self, scene: Scene) -> dict[str, Any]:
        h, f = self.num_historical_steps, self.num_future_steps
        a, cs = scene.agents, scene.current_step
        steps = cs - h + 1 + np.arange(h + f)
        inside = (steps >= 0) & (steps < scene.num_steps)
        src = np.clip(steps, 0, scene.num_steps - 1)
        obs = a.valid[:, src] & inside  # [N_all, T]
        now = obs[:, h - 1]

        ref = scene.focal_index if now[scene.focal_index] else (int(np.argmax(now)) if now.any() else -1)
        if ref >= 0:
            origin = a.position[ref, cs, :2].astype(np.float64)
            theta = float(a.heading[ref, cs])
        else:  # nobody observed at the current step: an empty sample in the scene frame
            origin, theta = np.zeros(2), 0.0
        cos, sin = math.cos(theta), math.sin(theta)
        rot = np.array([[cos, -sin], [sin, cos]])  # row vectors: p @ rot = R(-theta) p

        lanes, lane_mask = self._lanes(scene, origin, rot)
        pos_all = (a.position[:, src, :2].astype(np.float64) - origin) @ rot  # [N_all, T, 2]
        keep = now & (np.linalg.norm(pos_all[:, h - 1], axis=-1) <= self.radius)
        if len(lanes) and keep.any():
            pts = lanes[~lane_mask]
            cand = np.flatnonzero(keep)
            d = np.linalg.norm(pos_all[cand, h - 1][:, None, :] - pts[None, :, :], axis=-1).min(axis=1)
            keep[cand[d > self.lane_distance]] = False
        if ref >= 0:
            keep[ref] = True
        order = np.flatnonzero(keep)
        if ref >= 0:
            order = np.concatenate([[ref], order[order != ref]])

        n = len(order)
        o = obs[order]
        pos = np.where(o[..., None], pos_all[order], 0.0)
        heading = np.where(o, _wrap(a.heading[order][:, src].astype(np.float64) - theta), 0.0)
        speed = np.where(o, np.linalg.norm(a.velocity[order][:, src].astype(np.float64), axis=-1), 0.0)
        hist, hist_obs = pos[:, :h], o[:, :h]
        x = np.zeros((n, h, 2))
        both = hist_obs[:, 1:] & hist_obs[:, :-1]
        x[:, 1:] = np.where(both[..., None], hist[:, 1:] - hist[:, :-1], 0.0)
        vdiff = np.zeros((n, h))
        vdiff[:, 1:] = np.where(both, speed[:, 1:h] - speed[:, : h - 1], 0.0)
        types = a.type[order].astype(np.int64)
        padding = ~o
        padding[:, h:] |= _NO_FUTURE_TYPES[types][:, None]
        centers = pos[:, h - 1]
        y = np.where(~padding[:, h:, None], pos[:, h:] - centers[:, None], 0.0)
        attr = np.stack([types, a.role[order].astype(np.int64), COMBINED_TYPES[types]], axis=-1)

        f32 = np.float32
        out: dict[str, Any] = {
            "x": torch.from_numpy(x.astype(f32)),
            "x_positions": torch.from_numpy(np.where(hist_obs[..., None], hist, 0.0).astype(f32)),
            "x_centers": torch.from_numpy(centers.astype(f32)),
            "x_angles": torch.from_numpy(heading.astype(f32)),
            "x_velocity": torch.from_numpy(speed.astype(f32)),
            "x_velocity_diff": torch.from_numpy(vdiff.astype(f32)),
            "x_attr": torch.from_numpy(attr.reshape(n, 3)),
            "x_padding_mask": torch.from_numpy(padding),
            "y": torch.from_numpy(y.astype(f32)),
            "agent_index": torch.from_numpy(order.astype(np.int64)),
            "track_ids": [str(a.ids[i]) for i in order],
            "role": torch.from_numpy(a.role[order].astype(np.int64)),
            "lane_positions": torch.from_numpy(lanes.astype(f32)),
            "lane_centers": torch.from_numpy(((lanes[:, 9] + lanes[:, 10]) / 2.0).astype(f32)),
            "lane_angles": torch.from_numpy(
                np.arctan2(lanes[:, 10, 1] - lanes[:, 9, 1], lanes[:, 10, 0] - lanes[:, 9, 0]).astype(f32)
            ),
            "lane_padding_mask": torch.from_numpy(lane_mask),
            "frame_origin": torch.from_numpy(origin.astype(np.float64)),
            "frame_theta": torch.tensor(theta, dtype=torch.float64),
            "scene_origin": torch.from_numpy(np.asarray(scene.origin, np.float64).copy()),
            "scenario_id": scene.scenario_id,
            "dataset": str(scene.dataset),
            "current_step": int(cs),
        }
        return out

    def _lanes(self, scene: Scene, origin: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``([M, P, 2], [M, P] bool padded)`` lane centrelines in the frame."""
        m, p = scene.map, self.lane_points
        empty = np.zeros((0, p, 2)), np.zeros((0, p), bool)
        if not m.num_polylines:
            return empty
        lanes = np.flatnonzero(np.isin(m.polygon_type, _LANE_TYPES))
        if not len(lanes):
            return empty
        starts, lengths = m.polyline_offsets[:-1].astype(np.int64), np.diff(m.polyline_offsets).astype(np.int64)
        first = np.full((m.num_polygons, 3), m.num_polylines, np.int64)  # first polyline of each (polygon, side)
        np.minimum.at(
            first, (m.polyline_polygon.astype(np.int64), m.polyline_side.astype(np.int64)), np.arange(m.num_polylines)
        )
        first[first == m.num_polylines] = -1
        sel = first[lanes]
        ok_lr = (sel[:, Side.LEFT] >= 0) & (sel[:, Side.RIGHT] >= 0)
        ok_lr[ok_lr] &= (lengths[sel[ok_lr, Side.LEFT]] >= 2) & (lengths[sel[ok_lr, Side.RIGHT]] >= 2)
        ok_c = ~ok_lr & (sel[:, Side.CENTER] >= 0)
        ok_c[ok_c] &= lengths[sel[ok_c, Side.CENTER]] >= 2
        pts = m.points[:, :2].astype(np.float64)
        out = np.zeros((len(lanes), p, 2))
        rows = np.flatnonzero(ok_lr)
        if len(rows):
            left, right = sel[rows, Side.LEFT], sel[rows, Side.RIGHT]
            mid, _ = midpoint_lines_batch(
                pts, (starts[left], lengths[left]), (starts[right], lengths[right]), np.full(len(rows), p)
            )
            out[rows] = mid[:, :p]
        rows = np.flatnonzero(ok_c)
        if len(rows):
            center = sel[rows, Side.CENTER]
            out[rows] = interp_arc_batch(pts, starts[center], lengths[center], np.full(len(rows), p))[:, :p]
        usable = ok_lr | ok_c
        out = (out[usable] - origin) @ rot
        near = (np.linalg.norm(out, axis=-1) <= self.radius).any(axis=1)
        out = out[near]
        mask = (np.abs(out) > self.radius).any(axis=-1)
        out[mask] = 0.0
        keep = ~mask.all(axis=1)
        return out[keep], mask[keep]

    # ----------------------------------------------------------------------------------------------------------
    def collate(self, samples: list[dict[str, Any]]) -> ForecastMAEBatch:
        """Pad actors and lanes (value 0, masks True) into ``[B, N, ...]`` / ``[B, M, ...]``.

        Adds ``x_key_padding_mask [B, N]`` / ``lane_key_padding_mask [B, M]`` (True = no such actor / lane),
        ``num_actors`` / ``num_lanes [B]``, ``frame_origin [B, 2]``, ``frame_theta [B]``, ``scene_origin [B, 3]``
        (float64), and ``description``: the :class:`~smartpretrain.backbones.base.BatchDescription` whose agent
        rows are the live actors ``~x_key_padding_mask`` in row-major order (the rows of ``Forecast`` /
        ``EvalTargets``).
        """
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        batch = ForecastMAEBatch()
        for name in _ACTOR_FIELDS + _LANE_FIELDS:
            pad_value = True if name.endswith("padding_mask") else (-1 if name == "agent_index" else 0)
            batch[name] = pad_sequence([s[name] for s in samples], batch_first=True, padding_value=pad_value)
        n = torch.tensor([len(s["agent_index"]) for s in samples])
        m = torch.tensor([len(s["lane_centers"]) for s in samples])
        batch["x_key_padding_mask"] = torch.arange(batch["x"].shape[1])[None, :] >= n[:, None]
        batch["lane_key_padding_mask"] = torch.arange(batch["lane_centers"].shape[1])[None, :] >= m[:, None]
        # an actor whose whole window is missing is padding too (the reference's x_padding_mask.all(-1))
        batch["x_key_padding_mask"] |= batch["x_padding_mask"].all(-1)
        batch["lane_key_padding_mask"] |= batch["lane_padding_mask"].all(-1)
        batch["num_actors"], batch["num_lanes"] = n, m
        for name in ("frame_origin", "frame_theta", "scene_origin"):
            batch[name] = torch.stack([s[name] for s in samples])
        batch["scenario_id"] = [s["scenario_id"] for s in samples]
        batch["dataset"] = [s["dataset"] for s in samples]
        # agent rows of Forecast / EvalTargets: the live actors ~x_key_padding_mask, scene after scene (row-major)
        scene, actor = (~batch["x_key_padding_mask"]).nonzero(as_tuple=True)
        batch[DESCRIPTION_KEY] = BatchDescription(
            scenario_ids=list(batch["scenario_id"]),
            datasets=list(batch["dataset"]),
            origin=batch["scene_origin"].to(torch.float64),
            track_ids=[samples[b]["track_ids"][j] for b, j in zip(scene.tolist(), actor.tolist(), strict=True)],
            agent_scene=scene,
            agent_index=batch["agent_index"][scene, actor],
            agent_role=batch["role"][scene, actor],
            current_step=torch.tensor([s["current_step"] for s in samples], dtype=torch.long),
        )
        return batch


class ForecastMAEBatch(dict):
    """A collated batch: a dict of tensors (and the scene ids / dataset names) with ``.to(device)``; key
    ``"description"`` holds its
    :class:`~smartpretrain.backbones.base.BatchDescription`, through which everything outside this folder reads
    the batch."""

    def to(self, device: torch.device | str) -> ForecastMAEBatch:
        return ForecastMAEBatch(
            {k: v.to(device) if isinstance(v, (Tensor, BatchDescription)) else v for k, v in self.items()}
        )
