"""Forecast-MAE (Cheng, Mei, Liu; ICCV 2023): agent-centric transformer over actor-history and lane tokens.

Tokens: each actor's history (per-step displacement, speed change, valid flag) through a hierarchical
neighbourhood-attention encoder (:class:`~.layers.AgentEmbeddingLayer`), each lane's 20 centreline points through
a mini-PointNet (:class:`~.layers.LaneEmbeddingLayer`); type embeddings and a shared positional MLP on
``[x, y, cos φ, sin φ]`` are added; 4 pre-norm transformer blocks and a LayerNorm encode the sequence
``[actors, lanes]``. The focal actor (token 0) is decoded into 6 modes (:class:`~.layers.MultimodalDecoder`),
every other actor into one trajectory (``dense_predictor``).

Module and parameter names are those of the reference ``ModelForecast`` (192 state-dict keys, 1,923,357
parameters with the defaults), so its checkpoints load with ``net.`` stripped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smartpretrain.backbones.base import (
    AgentEmbeddings,
    Backbone,
    BackboneAdapter,
    EvalTargets,
    Forecast,
    rotate,
)
from smartpretrain.backbones.forecast_mae.adapter import ForecastMAEAdapter
from smartpretrain.backbones.forecast_mae.layers import (
    AgentEmbeddingLayer,
    LaneEmbeddingLayer,
    MultimodalDecoder,
    TransformerBlock,
    init_weights,
)
from smartpretrain.ssl.mae_tokens import MAETokens

__all__ = ["ForecastMAE"]

#: logit of the modes an actor without a multimodal head does not use (its one trajectory is mode 0)
_UNUSED_MODE_LOGIT = -1e4


class ForecastMAE(Backbone):
    """Forecast-MAE's forecasting model (see the module docstring).

    Args:
        embed_dim: D (128). encoder_depth: transformer blocks (4). num_heads: 8. mlp_ratio: 4.
        qkv_bias: the reference's flag (wired to ``add_bias_kv``; False). drop_path: max stochastic depth (0.2).
        num_historical_steps: H (AV2 50). num_future_steps: F (AV2 60). num_modes: K (6).
        radius, lane_distance, lane_points: the adapter's actor / lane selection (150 m, 5 m, 20 points).
    """

    pretrained_strict_prefixes = ("hist_embed.", "lane_embed.", "pos_embed.", "blocks.", "norm.")

    def __init__(
        self,
        embed_dim: int = 128,
        encoder_depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_path: float = 0.2,
        num_historical_steps: int = 50,
        num_future_steps: int = 60,
        num_modes: int = 6,
        radius: float = 150.0,
        lane_distance: float = 5.0,
        lane_points: int = 20,
    ) -> None:
        super().__init__()
        self.embed_dim, self.num_modes = int(embed_dim), int(num_modes)
        self.num_historical_steps, self.num_future_steps = int(num_historical_steps), int(num_future_steps)
        self.radius, self.lane_distance, self.lane_points = float(radius), float(lane_distance), int(lane_points)

        self.hist_embed_drop_path = float(drop_path)
        self.hist_embed = AgentEmbeddingLayer(4, embed_dim // 4, drop_path_rate=drop_path)
        self.lane_embed = LaneEmbeddingLayer(3, embed_dim)
        self.pos_embed = nn.Sequential(nn.Linear(4, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))
        rates = torch.linspace(0, drop_path, encoder_depth).tolist()
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_path=rate) for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.actor_type_embed = nn.Parameter(torch.empty(4, embed_dim))
        self.lane_type_embed = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.decoder = MultimodalDecoder(embed_dim, num_future_steps, num_modes)
        self.dense_predictor = nn.Sequential(nn.Linear(embed_dim, 256), nn.ReLU(), nn.Linear(256, num_future_steps * 2))
        self.apply(init_weights)
        nn.init.normal_(self.actor_type_embed, std=0.02)
        nn.init.normal_(self.lane_type_embed, std=0.02)

    # --- interface ----------------------------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.embed_dim

    def make_adapter(self) -> BackboneAdapter:
        return ForecastMAEAdapter(
            self.num_historical_steps, self.num_future_steps, self.radius, self.lane_distance, self.lane_points
        )

    def tokens(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Actor and lane tokens with type and position embeddings: ``([B, N, D], [B, M, D], masks...)``."""
        h = self.num_historical_steps
        pad = batch["x_padding_mask"][..., :h]
        feat = torch.cat([batch["x"], batch["x_velocity_diff"][..., None], (~pad)[..., None].float()], dim=-1)
        b, n = feat.shape[:2]
        actor_mask = batch["x_key_padding_mask"]
        actors = feat.new_zeros(b, n, self.embed_dim)
        live = ~actor_mask
        if live.any():  # fully padded actor slots skip the tokenizer and stay 0 (reference)
            # .to: under bf16 autocast the tokenizer returns bfloat16, and an indexed write needs equal dtypes
            actors[live] = self.hist_embed(feat[live].permute(0, 2, 1).contiguous()).to(actors.dtype)
        actors = actors + self.actor_type_embed[batch["x_attr"][..., 2]]

        lane_mask = batch["lane_key_padding_mask"]
        lane_valid = ~batch["lane_padding_mask"]
        rel = batch["lane_positions"] - batch["lane_centers"][..., None, :]
        lane_feat = torch.cat([rel, lane_valid[..., None].float()], dim=-1)
        m = lane_feat.shape[1]
        lanes = lane_feat.new_zeros(b, m, self.embed_dim)
        if m:
            lanes = self.lane_embed(lane_feat.reshape(b * m, self.lane_points, 3)).view(b, m, -1)
        lanes = lanes + self.lane_type_embed

        angle = batch["x_angles"][..., h - 1]
        actor_pos = torch.cat([batch["x_centers"], torch.stack([angle.cos(), angle.sin()], -1)], dim=-1)
        lane_angle = batch["lane_angles"]
        lane_pos = torch.cat([batch["lane_centers"], torch.stack([lane_angle.cos(), lane_angle.sin()], -1)], dim=-1)
        return actors + self.pos_embed(actor_pos), lanes + self.pos_embed(lane_pos), actor_mask, lane_mask

    # --- masked auto-encoding (Forecast-MAE's own pre-training, :mod:`smartpretrain.ssl.mae`) ------------------
    def make_future_tokenizer(self) -> nn.Module:
        """A tokenizer for ``MAETokens.future_input`` (the reference ``future_embed``: AgentEmbeddingLayer(3, 32))."""
        return AgentEmbeddingLayer(3, self.embed_dim // 4, drop_path_rate=float(self.hist_embed_drop_path))

    def embed_actor_type(self, actor_type: Tensor) -> Tensor:
        return self.actor_type_embed[actor_type]

    def embed_position(self, features: Tensor) -> Tensor:
        return self.pos_embed(features)

    def mae_tokens(self, batch: dict[str, Any]) -> MAETokens:
        """History and lane tokens as the encoder sees them, future features, and the reconstruction targets."""
        h = self.num_historical_steps
        actors, lanes, actor_mask, lane_mask = self.tokens(batch)
        angle = batch["x_angles"][..., h - 1]
        actor_pos = torch.cat([batch["x_centers"], torch.stack([angle.cos(), angle.sin()], -1)], dim=-1)
        lane_angle = batch["lane_angles"]
        lane_pos = torch.cat([batch["lane_centers"], torch.stack([lane_angle.cos(), lane_angle.sin()], -1)], dim=-1)
        pad = batch["x_padding_mask"]
        future_valid = ~pad[..., h:]
        future_input = torch.cat([batch["y"], future_valid[..., None].float()], dim=-1)
        return MAETokens(
            history=actors,
            lanes=lanes,
            future_input=future_input,
            actor_pos=actor_pos,
            lane_pos=lane_pos,
            actor_type=batch["x_attr"][..., 2],
            actor_padding=actor_mask,
            lane_padding=lane_mask,
            history_target=batch["x_positions"] - batch["x_centers"][..., None, :],
            history_valid=~pad[..., :h],
            future_target=batch["y"],
            future_valid=future_valid,
            lane_target=batch["lane_positions"] - batch["lane_centers"][..., None, :],
            lane_valid=~batch["lane_padding_mask"],
        )

    def encode_tokens(self, tokens: Tensor, key_padding_mask: Tensor) -> Tensor:
        """The transformer encoder (blocks + norm) on any token sequence ``[B, S, D]``."""
        attend = key_padding_mask.clone()
        attend[attend.all(dim=1), 0] = False  # nothing to attend to: avoid an all-masked softmax (NaN)
        x = tokens
        for block in self.blocks:
            x = block(x, key_padding_mask=attend)
        return self.norm(x)

    def encode(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """``{"x_enc": [B, N + M, D], "key_padding_mask": [B, N + M]}``."""
        actors, lanes, actor_mask, lane_mask = self.tokens(batch)
        mask = torch.cat([actor_mask, lane_mask], dim=1)
        return {"x_enc": self.encode_tokens(torch.cat([actors, lanes], dim=1), mask), "key_padding_mask": mask}

    def agent_embeddings(self, batch: dict[str, Any], encoding: dict[str, Tensor]) -> AgentEmbeddings:
        """The encoded actor tokens ``[A, 1, D]`` of every non-padded actor."""
        n = batch["x"].shape[1]
        live = ~batch["x_key_padding_mask"]
        scene = torch.arange(live.shape[0], device=live.device)[:, None].expand_as(live)
        return AgentEmbeddings(encoding["x_enc"][:, :n][live][:, None], scene[live], batch["agent_index"][live])

    def forecast(self, batch: dict[str, Any], encoding: dict[str, Tensor]) -> Forecast:
        """Focal: K modes; others: one trajectory (mode 0). ``loc`` in each actor's frame at step H-1."""
        x = encoding["x_enc"]
        n = batch["x"].shape[1]
        focal_loc, focal_pi = self.decoder(x[:, 0])  # [B, K, F, 2] focal frame = the focal agent's own frame
        dense = self.dense_predictor(x[:, 1:n]).view(x.shape[0], n - 1, self.num_future_steps, 2)
        live = ~batch["x_key_padding_mask"]
        b, k, f = x.shape[0], self.num_modes, self.num_future_steps
        loc = x.new_zeros(b, n, k, f, 2)
        loc[:, 0] = focal_loc
        loc[:, 1:, 0] = dense
        pi = x.new_full((b, n, k), _UNUSED_MODE_LOGIT)
        pi[:, 0] = focal_pi
        pi[:, 1:, 0] = 0.0
        heading = batch["x_angles"][..., self.num_historical_steps - 1]  # frame -> actor frame: rotate by -heading
        loc = rotate(loc, -heading[:, :, None, None])
        return Forecast(
            loc=loc[live], pi=pi[live], extras={"focal_loc": focal_loc, "focal_pi": focal_pi, "dense": dense}
        )

    def loss(self, batch: dict[str, Any], forecast: Forecast) -> dict[str, Tensor]:
        """Reference loss: focal best-of-K (ADE) SmoothL1 + mode cross-entropy + others' SmoothL1 (weights 1)."""
        h = self.num_historical_steps
        y, future_pad = batch["y"], batch["x_padding_mask"][..., h:]
        focal_y, focal_valid = y[:, 0], ~future_pad[:, 0]
        loc, pi = forecast.extras["focal_loc"], forecast.extras["focal_pi"]
        err = torch.norm(loc - focal_y[:, None], dim=-1) * focal_valid[:, None]  # [B, K, F]
        best = err.sum(-1).argmin(dim=-1)
        chosen = loc[torch.arange(loc.shape[0], device=loc.device), best]
        reg = F.smooth_l1_loss(chosen, focal_y, reduction="none").sum(-1)  # [B, F]
        agent_reg = (reg * focal_valid).sum() / (2.0 * focal_valid.sum()).clamp(min=1)
        has_focal = ~batch["x_key_padding_mask"][:, 0]  # a view may have no actor at its current step
        agent_cls = F.cross_entropy(pi[has_focal], best[has_focal]) if has_focal.any() else pi.sum() * 0.0
        others_valid = ~future_pad[:, 1:] & ~batch["x_key_padding_mask"][:, 1:, None]
        others = F.smooth_l1_loss(forecast.extras["dense"], y[:, 1:], reduction="none").sum(-1)
        others_reg = (others * others_valid).sum() / (2.0 * others_valid.sum()).clamp(min=1)
        total = agent_reg + agent_cls + others_reg
        return {"loss": total, "agent_reg": agent_reg, "agent_cls": agent_cls, "others_reg": others_reg}

    def eval_targets(self, batch: dict[str, Any]) -> EvalTargets:
        h = self.num_historical_steps
        live = ~batch["x_key_padding_mask"]
        heading = batch["x_angles"][..., h - 1]
        target = rotate(batch["y"], -heading[:, :, None])
        scene = torch.arange(live.shape[0], device=live.device)[:, None].expand_as(live)
        return EvalTargets(
            target=target[live],
            valid=~batch["x_padding_mask"][..., h:][live],
            role=batch["role"][live],
            scene_index=scene[live],
            dataset=list(batch["dataset"]),
            heading=(batch["x_angles"][..., h:] - heading[..., None])[live],  # in the actor's frame, not wrapped
            speed=batch["x_velocity"][..., h - 1][live],
        )

    def to_scene_frame(self, batch: dict[str, Any], loc: Tensor) -> Tensor:
        """Actor frame -> focal frame (rotate by the actor's heading, add its position) -> scene frame."""
        h = self.num_historical_steps
        live = ~batch["x_key_padding_mask"]
        scene = torch.arange(live.shape[0], device=live.device)[:, None].expand_as(live)[live]
        heading = batch["x_angles"][..., h - 1][live]
        in_frame = rotate(loc, heading[:, None, None]) + batch["x_centers"][live][:, None, None]
        theta = batch["frame_theta"].to(loc.dtype)[scene]
        origin = batch["frame_origin"].to(loc.dtype)[scene]
        return rotate(in_frame, theta[:, None, None]) + origin[:, None, None]
