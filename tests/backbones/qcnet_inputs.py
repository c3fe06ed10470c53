"""Random but valid QCNet input HeteroData (the QCNetAdapter format), with or without a map, and batches of them.

Agents drive smooth arcs (constant speed and yaw rate) through randomly timed observation windows; agent 0 is
the focal agent, observed throughout. The map has polygons with left / right / centre polylines of points and
random topology edges. Also a rigid transform of a whole scene for equivariance checks.
"""

from __future__ import annotations

import math

import torch
from torch_geometric.data import Batch, HeteroData


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def make_scene(
    num_agents: int = 8,
    num_polygons: int = 12,
    points_per_side: int = 5,
    num_historical_steps: int = 50,
    num_future_steps: int = 60,
    seed: int = 0,
    with_map: bool = True,
    extent: float = 60.0,
    dataset: str = "av2",
    dt: float = 0.1,
    always_observed: bool = False,
) -> HeteroData:
    """One scene in the adapter's format (scene frame, metres); ``always_observed``: every agent at every step."""
    g = torch.Generator().manual_seed(seed)
    h, f = num_historical_steps, num_future_steps
    steps, a = h + f, num_agents

    def uniform(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    # smooth arcs
    start = uniform(a, 2, lo=-extent, hi=extent)
    theta0 = uniform(a, lo=-math.pi, hi=math.pi)
    speed = uniform(a, lo=2.0, hi=15.0)
    # |yaw rate| >= 0.05 rad/s keeps earlier positions off the exact +-pi bearing behind the agent, where atan2
    # (and so the relative-angle features) is discontinuous: rotated copies of the scene stay comparable
    yaw_rate = uniform(a, lo=0.05, hi=0.3) * (torch.randint(0, 2, (a,), generator=g) * 2 - 1)
    t = torch.arange(steps, dtype=torch.float) * dt
    heading = theta0[:, None] + yaw_rate[:, None] * t  # [A, T]
    vel = speed[:, None, None] * torch.stack([heading.cos(), heading.sin()], dim=-1)  # [A, T, 2]
    # midpoint rule: each displacement follows the heading half a step back, so it is never exactly along it
    mid = heading - 0.5 * yaw_rate[:, None] * dt
    step = speed[:, None, None] * dt * torch.stack([mid.cos(), mid.sin()], dim=-1)
    step[:, 0] = 0.0
    xy = start[:, None] + torch.cumsum(step, dim=1)

    # observation windows: seen during the history, agent 0 always
    first = torch.randint(0, h, (a,), generator=g)
    last = torch.minimum(first + torch.randint(5, steps, (a,), generator=g), torch.full((a,), steps - 1))
    first[0], last[0] = 0, steps - 1
    observed = (torch.arange(steps) >= first[:, None]) & (torch.arange(steps) <= last[:, None])
    holes = torch.rand(a, steps, generator=g) < 0.03
    holes[0] = False
    observed &= ~holes
    observed[torch.arange(a), first] = True  # seen at least once in the history
    if always_observed:
        observed[:] = True

    valid_mask = torch.zeros(a, steps, dtype=torch.bool)
    valid_mask[:, 1:h] = observed[:, 1:h] & observed[:, : h - 1]
    valid_mask[:, h:] = observed[:, h:]
    predict_mask = torch.zeros(a, steps, dtype=torch.bool)
    predict_mask[:, h:] = observed[:, h:] & observed[:, h - 1 : h]

    obs3 = observed.unsqueeze(-1)
    position = torch.cat([xy, torch.zeros(a, steps, 1)], dim=-1) * obs3
    velocity = torch.cat([vel, torch.zeros(a, steps, 1)], dim=-1) * obs3
    heading = _wrap(heading) * observed

    # target in the agent's frame at step H-1
    origin_xy, origin_theta = position[:, h - 1, :2], heading[:, h - 1]
    rel = position[:, h:, :2] - origin_xy[:, None]
    cos, sin = origin_theta.cos()[:, None], origin_theta.sin()[:, None]
    target = (
        torch.stack(
            [
                cos * rel[..., 0] + sin * rel[..., 1],
                -sin * rel[..., 0] + cos * rel[..., 1],
                torch.zeros(a, f),
                _wrap(heading[:, h:] - origin_theta[:, None]),
            ],
            dim=-1,
        )
        * predict_mask[:, h:, None]
    )

    data = HeteroData()
    data["agent"].num_nodes = a
    data["agent"].agent_index = torch.arange(a)
    data["agent"].type = torch.randint(0, 10, (a,), generator=g)
    category = torch.randint(0, 3, (a,), generator=g)
    category[0] = 3
    data["agent"].category = category
    data["agent"].position = position
    data["agent"].heading = heading
    data["agent"].velocity = velocity
    data["agent"].valid_mask = valid_mask
    data["agent"].predict_mask = predict_mask
    data["agent"].target = target

    p = num_polygons if with_map else 0
    n_side = points_per_side
    pl_pos = uniform(p, 2, lo=-1.3 * extent, hi=1.3 * extent)
    pl_theta = uniform(p, lo=-math.pi, hi=math.pi)
    data["map_polygon"].num_nodes = p
    data["map_polygon"].position = torch.cat([pl_pos, torch.zeros(p, 1)], dim=-1)
    data["map_polygon"].orientation = pl_theta
    data["map_polygon"].type = torch.randint(0, 4, (p,), generator=g)
    data["map_polygon"].is_intersection = torch.randint(0, 3, (p,), generator=g)

    # points: left / right / centre polylines of n_side points, 2 m apart along the polygon direction
    direction = torch.stack([pl_theta.cos(), pl_theta.sin()], dim=-1)  # [P, 2]
    normal = torch.stack([-pl_theta.sin(), pl_theta.cos()], dim=-1)
    lateral = torch.tensor([1.75, -1.75, 0.0])  # side 0 left, 1 right, 2 centre
    along = torch.arange(n_side, dtype=torch.float) * 2.0
    pts = (
        pl_pos[:, None, None]
        + lateral[None, :, None, None] * normal[:, None, None]
        + along[None, None, :, None] * direction[:, None, None]
    )  # [P, 3, n, 2]
    m = p * 3 * n_side
    data["map_point"].num_nodes = m
    data["map_point"].position = torch.cat([pts.reshape(m, 2), torch.zeros(m, 1)], dim=-1)
    data["map_point"].orientation = pl_theta.repeat_interleave(3 * n_side) + uniform(m, lo=-0.05, hi=0.05)
    data["map_point"].magnitude = uniform(m, lo=1.8, hi=2.2)
    data["map_point"].height = torch.zeros(m)
    point_type = torch.randint(0, 15, (p, 3, n_side), generator=g)
    point_type[:, 2] = 16  # centre lines
    data["map_point"].type = point_type.reshape(m)
    data["map_point"].side = torch.arange(3).view(1, 3, 1).expand(p, 3, n_side).reshape(m)
    data["map_point", "to", "map_polygon"].edge_index = torch.stack(
        [torch.arange(m), torch.arange(p).repeat_interleave(3 * n_side)]
    )
    # topology: random distinct pairs without self loops
    if p > 1:
        pairs = torch.randperm(p * p, generator=g)[: 2 * p]
        src, dst = pairs // p, pairs % p
        keep = src != dst
        src, dst = src[keep], dst[keep]
    else:
        src = dst = torch.zeros(0, dtype=torch.long)
    data["map_polygon", "to", "map_polygon"].edge_index = torch.stack([src, dst])
    data["map_polygon", "to", "map_polygon"].type = torch.randint(1, 5, (src.numel(),), generator=g)

    data.scenario_id = f"synthetic-{seed}"
    data.dataset = dataset
    data.origin = torch.tensor([[1000.0 + seed, -2000.0, 0.0]], dtype=torch.float64)
    return data


def make_batch(num_scenes: int = 2, seed: int = 0, with_map: bool | list[bool] = True, **kwargs) -> Batch:
    """``Batch.from_data_list`` of ``num_scenes`` scenes with different sizes (seeds ``seed + i``)."""
    maps = with_map if isinstance(with_map, list) else [with_map] * num_scenes
    scenes = []
    for i in range(num_scenes):
        kw = dict(kwargs)
        kw.setdefault("num_agents", 6 + 3 * i)
        kw.setdefault("num_polygons", 10 + 4 * i)
        scenes.append(make_scene(seed=seed + i, with_map=maps[i], **kw))
    return Batch.from_data_list(scenes)


def transform_scene(data: HeteroData, angle: float, shift: tuple[float, float]) -> HeteroData:
    """The same scene rotated by ``angle`` and translated by ``shift`` (agent-frame targets are unchanged)."""
    out = data.clone()
    cos, sin = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[cos, -sin], [sin, cos]])
    offset = torch.tensor(shift)

    def move(xyz: torch.Tensor, translate: bool = True) -> torch.Tensor:
        xyz = xyz.clone()
        xyz[..., :2] = xyz[..., :2] @ rot.T + (offset if translate else 0.0)
        return xyz

    agent = out["agent"]
    agent.position = move(agent.position)
    agent.velocity = move(agent.velocity, translate=False)
    agent.heading = _wrap(agent.heading + angle)
    for store in ("map_polygon", "map_point"):
        out[store].position = move(out[store].position)
        out[store].orientation = _wrap(out[store].orientation + angle)
    return out
