r"""QCNet's training loss: winner-take-all Laplace regression of the proposal and the refinement, and a mixture
NLL on the final step for the mode logits.

With reg_mask = ``predict_mask[:, H:]`` and cls_mask = ``predict_mask[:, -1]``:

- best mode :math:`k^*_a = \arg\min_k \sum_t m_{at} \lVert \hat y^{prop}_{akt} - y_{at} \rVert_2` (on the
  **proposal**; used for both regression terms);
- per (agent, step) NLL of mode :math:`k^*` summed over coordinates, :math:`\log 2b + |y - \mu| / b` (plus the
  von Mises NLL of the heading with ``output_head``), then summed over agents, divided by the number of valid
  agents at each step, and averaged over the steps;
- classification: :math:`-\log \sum_k \pi_k\, \mathrm{Laplace}(y_{a,F} \mid \mu_{akF}, b_{akF})` with the refined
  final-step location and scale detached (only ``pi`` gets gradient), averaged over cls_mask.

Total = reg_propose + reg_refine + cls.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _clamp_no_grad(x: Tensor, eps: float) -> Tensor:
    """``x`` clamped to ``>= eps`` in value; the gradient passes as if unclamped."""
    x = x.clone()
    with torch.no_grad():
        x.clamp_(min=eps)
    return x


def laplace_nll(loc: Tensor, scale: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Element-wise Laplace NLL :math:`\log(2b) + |y - \mu| / b`, with :math:`b \ge` ``eps`` (no gradient)."""
    scale = _clamp_no_grad(scale, eps)
    return torch.log(2 * scale) + (target - loc).abs() / scale


def log_i0(x: Tensor) -> Tensor:
    r""":math:`\log I_0(x)` for :math:`x \ge 0`, computed stably as :math:`\log(I_0(x) e^{-x}) + x`."""
    return torch.log(torch.special.i0e(x)) + x


def von_mises_nll(loc: Tensor, conc: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Element-wise von Mises NLL :math:`-\kappa \cos(y - \mu) + \log 2\pi + \log I_0(\kappa)`."""
    conc = _clamp_no_grad(conc, eps)
    return -conc * torch.cos(target - loc) + math.log(2 * math.pi) + log_i0(conc)


def best_mode(loc: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """``[A]`` index of the mode of ``loc [A, K, F, >=2]`` with the smallest summed L2 error over valid steps."""
    err = torch.linalg.vector_norm(loc[..., :2] - target[:, None, :, :2], dim=-1)  # [A, K, F]
    err = torch.where(mask[:, None], err, torch.zeros_like(err))
    return err.sum(dim=-1).argmin(dim=-1)


def masked_step_mean(loss: Tensor, mask: Tensor) -> Tensor:
    """``loss [A, F]`` summed over valid agents, divided by their number at each step, averaged over steps."""
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    return (loss.sum(dim=0) / mask.sum(dim=0).clamp(min=1)).mean()


def mixture_nll(pi: Tensor, loc: Tensor, scale: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    r"""Mean over ``mask [A]`` of :math:`-\mathrm{logsumexp}_k(\log\mathrm{softmax}(\pi)_k - \mathrm{NLL}_k)`.

    ``loc``/``scale`` ``[A, K, C]`` (detached here), ``target [A, C]``; the per-mode NLL is summed over C.
    """
    nll = laplace_nll(loc.detach(), scale.detach(), target.unsqueeze(1)).sum(dim=-1)  # [A, K]
    loss = -torch.logsumexp(torch.log_softmax(pi, dim=-1) - nll, dim=-1)
    loss = torch.where(mask, loss, torch.zeros_like(loss))
    return loss.sum() / mask.sum().clamp(min=1)


def qcnet_loss(
    out: dict[str, Tensor],
    pi: Tensor,
    target: Tensor,
    reg_mask: Tensor,
    cls_mask: Tensor,
    output_head: bool = False,
) -> dict[str, Tensor]:
    """The loss terms from the decoder outputs ``out`` (``loc/scale_{propose,refine}_pos`` ``[A, K, F, 2]``,
    with ``output_head`` also ``loc/conc_{propose,refine}_head`` ``[A, K, F, 1]``), ``pi [A, K]``,
    ``target [A, F, >=2]`` (x, y[, z, heading]) and the masks ``reg_mask [A, F]``, ``cls_mask [A]``."""
    reg_mask, cls_mask = reg_mask.bool(), cls_mask.bool()
    gt = target[..., :2]
    rows = torch.arange(gt.size(0), device=gt.device)
    k_best = best_mode(out["loc_propose_pos"], gt, reg_mask)
    losses: dict[str, Tensor] = {}
    for stage in ("propose", "refine"):
        nll = laplace_nll(out[f"loc_{stage}_pos"][rows, k_best], out[f"scale_{stage}_pos"][rows, k_best], gt)
        nll = nll.sum(dim=-1)  # [A, F]
        if output_head:
            nll = nll + von_mises_nll(
                out[f"loc_{stage}_head"][rows, k_best, :, 0],
                out[f"conc_{stage}_head"][rows, k_best, :, 0],
                target[..., 3],
            )
        losses[f"reg_loss_{stage}"] = masked_step_mean(nll, reg_mask)
    losses["cls_loss"] = mixture_nll(
        pi, out["loc_refine_pos"][:, :, -1, :2], out["scale_refine_pos"][:, :, -1, :2], gt[:, -1], cls_mask
    )
    losses["loss"] = losses["reg_loss_propose"] + losses["reg_loss_refine"] + losses["cls_loss"]
    return losses
