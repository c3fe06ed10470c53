"""Constant-velocity baseline on the QCNet input format: no parameters, one mode.

The velocity is the mean displacement per second over the last ``window_s`` seconds of history that are observed
(fewer when the track is shorter), which is robust to the frame-to-frame jitter of detection centroids; the
forecast extrapolates it from the current position. It is a reference point for the learned backbones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from smartpretrain.backbones.base import AgentEmbeddings, Backbone, BackboneAdapter, EvalTargets, Forecast, rotate


class ConstantVelocity(Backbone):
    """Extrapolate each agent's recent mean velocity (in its own current frame)."""

    def __init__(
        self, num_historical_steps: int = 50, num_future_steps: int = 60, window_s: float = 0.5, dt: float = 0.1
    ) -> None:
        super().__init__()
        if window_s <= 0 or dt <= 0:
            raise ValueError(f"window_s and dt must be > 0, got window_s={window_s}, dt={dt}")
        self.num_historical_steps, self.num_future_steps = num_historical_steps, num_future_steps
        # the window in steps of this dataset's timeline (10 Hz, 0.5 s: 5 steps; ETH/UCY's 0.4 s: the last step)
        self.num_modes, self.window, self.dt = 1, max(1, round(window_s / dt)), dt

    def make_adapter(self) -> BackboneAdapter:
        from smartpretrain.backbones.qcnet.adapter import QCNetAdapter

        return QCNetAdapter(num_historical_steps=self.num_historical_steps, num_future_steps=self.num_future_steps)

    def encode(self, batch: Any) -> dict[str, Tensor]:
        agent = batch["agent"]
        h, w = self.num_historical_steps, self.window
        pos = agent["position"][:, :h, :2]
        # valid_mask[t] means "observed at t and t-1", so observed[t] follows from valid_mask[t] or valid_mask[t+1]
        valid = agent["valid_mask"]
        observed = valid[:, :h].clone()
        observed[:, : h - 1] |= valid[:, 1:h]
        observed[:, h - 1] |= agent["predict_mask"][:, h:].any(dim=-1)
        steps = torch.arange(h, device=pos.device)
        recent = observed & (steps >= h - 1 - w)
        # first and last observed step of the window, per agent
        big = torch.full_like(steps, h).expand_as(recent)
        first = torch.where(recent, steps.expand_as(recent), big).min(dim=1).values.clamp(max=h - 1)
        last = torch.where(recent, steps.expand_as(recent), -1).max(dim=1).values.clamp(min=0)
        span = ((last - first).clamp(min=1) * self.dt).unsqueeze(-1)
        rows = torch.arange(len(pos), device=pos.device)
        velocity = (pos[rows, last] - pos[rows, first]) / span
        velocity = torch.where((last > first).unsqueeze(-1), velocity, torch.zeros_like(velocity))
        return {"velocity": velocity, "heading": agent["heading"][:, h - 1]}

    def agent_embeddings(self, batch: Any, encoding: dict[str, Tensor]) -> AgentEmbeddings:
        agent = batch["agent"]
        emb = torch.cat([encoding["velocity"], encoding["heading"].unsqueeze(-1)], dim=-1).unsqueeze(1)
        return AgentEmbeddings(emb, agent.get("batch", torch.zeros(len(emb), dtype=torch.long)), agent["agent_index"])

    def forecast(self, batch: Any, encoding: dict[str, Tensor]) -> Forecast:
        local_v = rotate(encoding["velocity"], -encoding["heading"])
        t = torch.arange(1, self.num_future_steps + 1, device=local_v.device, dtype=local_v.dtype) * self.dt
        loc = (local_v[:, None, :] * t[:, None]).unsqueeze(1)  # [A, 1, F, 2]
        return Forecast(loc=loc, pi=torch.zeros(len(loc), 1, device=loc.device), extras={})

    def loss(self, batch: Any, forecast: Forecast) -> dict[str, Tensor]:
        return {"loss": forecast.loc.new_zeros(())}

    def eval_targets(self, batch: Any) -> EvalTargets:
        agent = batch["agent"]
        h = self.num_historical_steps
        scene = agent.get("batch", torch.zeros(agent.num_nodes, dtype=torch.long))
        dataset = batch.dataset if isinstance(batch.dataset, list) else [batch.dataset]
        return EvalTargets(agent["target"][..., :2], agent["predict_mask"][:, h:], agent["category"], scene, dataset)

    def to_scene_frame(self, batch: Any, loc: Tensor) -> Tensor:
        agent = batch["agent"]
        h = self.num_historical_steps
        return rotate(loc, agent["heading"][:, h - 1, None, None]) + agent["position"][:, h - 1, None, None, :2]
