"""1-D neighborhood attention (Hassani et al., CVPR 2023) in plain torch, with natten 0.14's parameter names."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def neighborhood_indices(length: int, kernel_size: int, device: torch.device | None = None) -> Tensor:
    r"""Key indices ``[L, w]`` of each query's window, ``w = min(k, L)``.

    Query :math:`i` attends to :math:`j \in [s_i, s_i + w)` with :math:`s_i = \mathrm{clamp}(i - \lfloor k/2
    \rfloor, 0, L - w)`: the window is centred on :math:`i` and shifted inward at the sequence edges (so every
    query sees exactly :math:`w` keys); with :math:`L < k` it is the whole sequence.
    """
    width = min(kernel_size, length)
    pos = torch.arange(length, device=device)
    start = (pos - kernel_size // 2).clamp(min=0, max=length - width)
    return start[:, None] + torch.arange(width, device=device)[None, :]


class NeighborhoodAttention1D(nn.Module):
    r"""Multi-head 1-D neighborhood attention with relative position bias, dilation 1.

    The CPU / plain-torch equivalent of natten 0.14's ``NeighborhoodAttention1D`` (same parameter names and
    shapes, so its checkpoints load). For input :math:`x \in \mathbb{R}^{B \times L \times C}`, heads
    :math:`h` of size :math:`d = C / H` and the window :math:`N(i)` of
    :func:`neighborhood_indices` (:math:`k` keys, shifted inward at the edges):

    .. math::
        [q, k, v] = x W_{qkv} + b_{qkv}, \qquad
        a^h_{ij} = \frac{q^h_i \cdot k^h_j}{\sqrt{d}} + \mathrm{rpb}[h,\ j - i + k - 1], \quad j \in N(i),

    .. math::
        o^h_i = \sum_{j \in N(i)} \mathrm{softmax}_{j \in N(i)}(a^h_{ij})\, v^h_j, \qquad
        y_i = W_{proj} [o^1_i, \ldots, o^H_i] + b_{proj}.

    The window indices ``[L, k]`` are gathered once per call; keys and values are gathered with them (memory
    :math:`O(B L k C)`, no loop over positions).

    **Deviation from natten** for :math:`L < k` (e.g. an 11-step history after two stride-2 downsamplings,
    length 3, under kernel 5): here the window is the whole sequence (all :math:`L` keys; the bias index
    :math:`j - i + k - 1` stays within ``[0, 2k-2]``), whereas natten 0.14 zero-pads the sequence to :math:`k`
    tokens, whose keys and values (the ``qkv`` bias) then take part in the softmax. For :math:`L \ge k` the
    two agree.

    State-dict keys: ``rpb [H, 2k-1]`` (truncated normal, std 0.02), ``qkv.{weight,bias}`` ``[3C, C]``,
    ``proj.{weight,bias}`` ``[C, C]``.

    Args:
        dim: channels :math:`C` (divisible by ``num_heads``).
        num_heads: heads :math:`H`.
        kernel_size: window size :math:`k` (odd, as in natten).
        qkv_bias: whether ``qkv`` has a bias.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.dim, self.num_heads, self.kernel_size = dim, num_heads, kernel_size
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1))
        nn.init.trunc_normal_(self.rpb, std=0.02)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, L, C]`` -> ``[B, L, C]``."""
        b, length, c = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]  # [B, H, L, d]
        idx = neighborhood_indices(length, self.kernel_size, device=x.device)  # [L, w]
        rel = idx - torch.arange(length, device=x.device)[:, None] + self.kernel_size - 1  # [L, w]
        k_win, v_win = k[:, :, idx], v[:, :, idx]  # [B, H, L, w, d]
        logits = torch.einsum("bhld,bhlwd->bhlw", q, k_win) + self.rpb[:, rel]
        attn = logits.softmax(dim=-1)
        out = torch.einsum("bhlw,bhlwd->bhld", attn, v_win)
        return self.proj(out.transpose(1, 2).reshape(b, length, c))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}"
