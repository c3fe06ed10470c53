"""Pre-norm transformer encoder block over the scene tokens (Forecast-MAE's encoder / decoder blocks)."""

from __future__ import annotations

from torch import Tensor, nn

from smartpretrain.backbones.forecast_mae.layers.drop_path import DropPath
from smartpretrain.backbones.forecast_mae.layers.mlp import Mlp


class TransformerBlock(nn.Module):
    r"""Pre-norm self-attention block:

    .. math::
        x \leftarrow x + \mathrm{DropPath}(\mathrm{MHA}(\mathrm{LN}_1(x); \text{mask})), \qquad
        x \leftarrow x + \mathrm{DropPath}(\mathrm{MLP}(\mathrm{LN}_2(x)))

    with :class:`torch.nn.MultiheadAttention` (batch first; keys with ``key_padding_mask`` True are ignored)
    and a GELU :class:`Mlp` of hidden size ``int(dim * mlp_ratio)``.

    As in the reference, ``qkv_bias`` is wired to ``add_bias_kv`` of :class:`~torch.nn.MultiheadAttention`
    (learned ``bias_k``/``bias_v`` tokens appended to the keys), *not* to the bias of the projections:
    ``attn.in_proj_bias`` always exists. Padded tokens are still updated (their own outputs are meaningless);
    a row whose keys are all padded gives NaN (unless ``qkv_bias`` adds the bias token).

    Modules: ``norm1``, ``attn`` (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), ``drop_path``,
    ``norm2``, ``mlp`` (198,272 parameters with the defaults).

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden size / ``dim``.
        qkv_bias: ``add_bias_kv`` of the attention (see above).
        drop_path: stochastic-depth probability of both residual branches.
    """

    def __init__(
        self,
        dim: int = 128,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, add_bias_kv=qkv_bias, dropout=0.0, batch_first=True)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=nn.GELU)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x [B, S, dim]``, ``key_padding_mask [B, S]`` (bool, True = padding) -> ``[B, S, dim]``."""
        h = self.norm1(x)
        h = self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        x = x + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.norm2(x)))
