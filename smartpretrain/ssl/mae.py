"""Masked auto-encoding of trajectories and lanes (Forecast-MAE, ICCV 2023), as a pluggable pre-training objective.

Works with any backbone that provides the masked-token capability
(:class:`~smartpretrain.ssl.mae_tokens.MaskedAutoencoding`): its history and lane tokens, future features and a
future tokenizer, its transformer encoder on an arbitrary token sequence, and reconstruction targets
(:class:`~smartpretrain.ssl.mae_tokens.MAETokens`). Forecast-MAE does; QCNet's scene graph has no token sequence
and does not. The objective declares the whole scenes and the backbone at construction, and no encoded view.

Masking, per scene: of the actors whose future is not fully missing ("predictable"), a random
``floor(r_a * n)`` show their **future** and hide their history; every other actor shows its history, and the
remaining predictable ones hide their future, so no actor shows both. ``ceil((1 - r_l) * M)`` random lanes stay
visible. Only visible tokens are encoded (history, future, lane tokens, each group packed per scene); the decoder
puts them back among learned mask tokens, adds its own position embedding and reconstructs:

.. math::
    \\mathcal{L}_{MAE} = w_f\\,\\mathrm{L1}(\\hat y^{fut}, y^{fut}) + w_h\\,\\mathrm{L1}(\\hat y^{hist}, y^{hist})
        + w_l\\,\\mathrm{MSE}(\\hat y^{lane}, y^{lane})

each averaged over the observed steps / points of the masked tokens of the global batch (weights 1, 1, 0.35).
Deviation from the reference: the decoder blocks are ``nn.TransformerEncoderLayer`` (pre-norm, GELU, the same
shapes) without stochastic depth; the decoder is dropped at fine-tuning, so this changes nothing transferred.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smartpretrain.ssl.distributed import global_sum, world_size
from smartpretrain.ssl.mae_tokens import MaskedAutoencoding
from smartpretrain.ssl.objective import ObjectiveNeeds, ObjectiveOutput, SSLInputs, SSLObjective

__all__ = ["MaskedAutoencodingLoss", "mae_masks"]


def mae_masks(
    actor_padding: Tensor,
    predictable: Tensor,
    lane_padding: Tensor,
    actor_mask_ratio: float,
    lane_mask_ratio: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Visibility per scene: ``(history_visible [B, N], future_visible [B, N], lane_visible [B, M])``.

    ``predictable`` = actors whose future is not fully missing. See the module docstring for the rule.
    """
    b, n = actor_padding.shape
    device = actor_padding.device
    live = predictable & ~actor_padding
    scores = torch.rand(b, n, device=device).masked_fill(~live, 2.0)  # the others sort last
    rank = scores.argsort(dim=1).argsort(dim=1)
    num_future_visible = torch.floor(live.sum(dim=1).float() * actor_mask_ratio).long()
    future_visible = (rank < num_future_visible[:, None]) & live
    history_visible = ~future_visible & ~actor_padding

    m = lane_padding.shape[1]
    lane_scores = torch.rand(b, m, device=device).masked_fill(lane_padding, 2.0)
    lane_rank = lane_scores.argsort(dim=1).argsort(dim=1)
    num_lanes = (~lane_padding).sum(dim=1).float()
    num_visible = torch.ceil(num_lanes * (1.0 - lane_mask_ratio)).long()
    lane_visible = (lane_rank < num_visible[:, None]) & ~lane_padding
    return history_visible, future_visible, lane_visible


def _pack(tokens: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Keep ``tokens[keep]`` per scene, left-aligned and padded: ``([B, S, D], padding [B, S])``."""
    b = tokens.shape[0]
    counts = keep.sum(dim=1)
    s = int(counts.max()) if b else 0
    out = tokens.new_zeros(b, s, tokens.shape[-1])
    slot = torch.cumsum(keep.long(), dim=1) - 1
    rows, cols = keep.nonzero(as_tuple=True)
    out[rows, slot[rows, cols]] = tokens[rows, cols]
    padding = torch.arange(s, device=tokens.device)[None, :] >= counts[:, None]
    return out, padding


def _unpack(packed: Tensor, keep: Tensor, fill: Tensor) -> Tensor:
    """Inverse of :func:`_pack` onto ``[B, N, D]`` filled with ``fill`` where not kept."""
    b, n = keep.shape
    out = fill.expand(b, n, -1).clone()
    slot = torch.cumsum(keep.long(), dim=1) - 1
    rows, cols = keep.nonzero(as_tuple=True)
    out[rows, cols] = packed[rows, slot[rows, cols]].to(out.dtype)  # bfloat16 under autocast, the fill float32
    return out


class MaskedAutoencodingLoss(SSLObjective):
    """Forecast-MAE's objective on the backbone's tokens (see the module docstring).

    Args:
        backbone: the pre-training backbone (sizes the heads; supplies the future tokenizer). Must implement
            :class:`MaskedAutoencoding`. It is not kept as a submodule.
        actor_mask_ratio, lane_mask_ratio: 0.5 / 0.5. loss_weights: (future, history, lane) = (1, 1, 0.35).
        decoder_depth, num_heads, mlp_ratio: the decoder (4 blocks, 8 heads, 4).
    """

    #: the whole scenes in the backbone's format; the backbone at construction; the views are not encoded
    needs: ClassVar[ObjectiveNeeds] = ObjectiveNeeds(full_scene=True, backbone_at_init=True)

    def __init__(
        self,
        backbone: Any,
        actor_mask_ratio: float = 0.5,
        lane_mask_ratio: float = 0.5,
        loss_weights: tuple[float, float, float] = (1.0, 1.0, 0.35),
        decoder_depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, MaskedAutoencoding):
            raise TypeError(
                f"{type(backbone).__name__} does not support masked auto-encoding (needs mae_tokens, "
                "encode_tokens, make_future_tokenizer, embed_actor_type, embed_position)"
            )
        if not (0.0 <= actor_mask_ratio <= 1.0 and 0.0 <= lane_mask_ratio <= 1.0):
            raise ValueError(f"mask ratios must be in [0, 1], got {actor_mask_ratio}, {lane_mask_ratio}")
        d = int(backbone.embedding_dim)
        self.actor_mask_ratio, self.lane_mask_ratio = float(actor_mask_ratio), float(lane_mask_ratio)
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.history_steps, self.future_steps = int(backbone.num_historical_steps), int(backbone.num_future_steps)
        self.lane_points = int(getattr(backbone, "lane_points", 20))
        self.future_embed = backbone.make_future_tokenizer()
        self.decoder_embed = nn.Linear(d, d)
        self.history_mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.future_mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.lane_mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(4, d), nn.GELU(), nn.Linear(d, d))
        layer = nn.TransformerEncoderLayer(
            d, num_heads, int(d * mlp_ratio), dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder_blocks = nn.TransformerEncoder(layer, decoder_depth, enable_nested_tensor=False)
        self.decoder_norm = nn.LayerNorm(d)
        self.future_pred = nn.Linear(d, self.future_steps * 2)
        self.history_pred = nn.Linear(d, self.history_steps * 2)
        self.lane_pred = nn.Linear(d, self.lane_points * 2)
        for token in (self.history_mask_token, self.future_mask_token, self.lane_mask_token):
            nn.init.normal_(token, std=0.02)

    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        if inputs.scenes is None:
            raise ValueError("MaskedAutoencodingLoss needs the whole scenes (SSLInputs.scenes)")
        backbone, batch = inputs.scenes.backbone, inputs.scenes.batch  # the one checked at construction
        t = backbone.mae_tokens(batch)
        b, n, d = t.history.shape
        predictable = t.future_valid.any(dim=-1) & ~t.actor_padding
        hist_vis, fut_vis, lane_vis = mae_masks(
            t.actor_padding, predictable, t.lane_padding, self.actor_mask_ratio, self.lane_mask_ratio
        )
        # future tokens only for the actors whose future stays visible (masked futures never reach the encoder)
        future = t.history.new_zeros(b, n, d)
        if fut_vis.any():
            feats = t.future_input[fut_vis].permute(0, 2, 1).contiguous()
            future[fut_vis] = self.future_embed(feats).to(future.dtype)  # an indexed write needs equal dtypes
        position = backbone.embed_position(t.actor_pos)
        future = future + backbone.embed_actor_type(t.actor_type) + position

        groups = ((t.history, hist_vis), (future, fut_vis), (t.lanes, lane_vis))
        packed = [_pack(tokens, keep) for tokens, keep in groups]
        x = torch.cat([p[0] for p in packed], dim=1)
        padding = torch.cat([p[1] for p in packed], dim=1)
        encoded = self.decoder_embed(backbone.encode_tokens(x, padding))
        sizes = [p[0].shape[1] for p in packed]
        parts = torch.split(encoded, sizes, dim=1)
        hist_tok = _unpack(parts[0], hist_vis, self.history_mask_token)
        fut_tok = _unpack(parts[1], fut_vis, self.future_mask_token)
        lane_tok = _unpack(parts[2], lane_vis, self.lane_mask_token)
        y = torch.cat([hist_tok, fut_tok, lane_tok], dim=1)
        y = y + self.decoder_pos_embed(torch.cat([t.actor_pos, t.actor_pos, t.lane_pos], dim=1))
        key_padding = torch.cat([t.actor_padding, t.actor_padding | ~predictable, t.lane_padding], dim=1)
        attend = key_padding.clone()
        attend[attend.all(dim=1), 0] = False
        y = self.decoder_norm(self.decoder_blocks(y, src_key_padding_mask=attend))
        m = t.lanes.shape[1]
        hist_out, fut_out, lane_out = torch.split(y, [n, n, m], dim=1)

        # masked tokens only, observed steps only; normalised by global counts (DDP: mean over the global batch)
        fut_mask = (predictable & ~fut_vis)[..., None] & t.future_valid
        hist_mask = (~hist_vis & ~t.actor_padding)[..., None] & t.history_valid
        lane_mask = (~lane_vis & ~t.lane_padding)[..., None] & t.lane_valid
        fut_pred = self.future_pred(fut_out).view(b, n, self.future_steps, 2)
        hist_pred = self.history_pred(hist_out).view(b, n, self.history_steps, 2)
        lane_pred = self.lane_pred(lane_out).view(b, m, self.lane_points, 2)
        terms = (
            (F.l1_loss(fut_pred, t.future_target, reduction="none"), fut_mask),
            (F.l1_loss(hist_pred, t.history_target, reduction="none"), hist_mask),
            (F.mse_loss(lane_pred, t.lane_target, reduction="none"), lane_mask),
        )
        total = fut_pred.sum() * 0.0 + hist_pred.sum() * 0.0 + lane_pred.sum() * 0.0
        for weight, (err, mask) in zip(self.loss_weights, terms, strict=True):
            count = global_sum(mask.sum().to(err.dtype) * 2)  # x and y
            if float(count) > 0:
                total = total + weight * (err * mask[..., None]).sum() * world_size() / count
        return ObjectiveOutput(total)  # no per-query values: MAE's terms are per token, not per view query
