"""Pairwise similarity of trajectories: what decides the positives and negatives of triplet mining
(:mod:`~smartpretrain.embeddings.mining`), after "Contrast & Compress" (arXiv 2506.02571).

Trajectories are ``positions [B, T, 2]`` in the agent frame with ``valid [B, T]``; the position of an invalid
step is never read. Two measures (:class:`TrajectorySimilarity`), each ``[B, B]``:

**cosine** (:func:`direction_similarity`): the mean cosine of the two trajectories' motion directions, step by
step. With ``d_{i,t} = p_{i,t+1} - p_{i,t}`` and ``m_{i,t} = 1`` where steps t and t + 1 are valid and
``|d_{i,t}| > min_step_m``,

.. math::
    U_{i,t} = m_{i,t} \\frac{d_{i,t}}{|d_{i,t}|}, \\qquad
    S_{ij} = \\frac{\\sum_t U_{i,t} \\cdot U_{j,t}}{\\sum_t m_{i,t} m_{j,t}} \\in [-1, 1]

(one matmul of the flattened ``U``). A pair with no common moving step gets the cosine of the end-point
directions ``p_last - p_first`` instead, 0 when one of them has not moved. Speed-blind: only directions enter.

**fft** (:func:`spectrum_similarity`): the cosine of the magnitude spectra of the coordinate sequences,

.. math::
    F_i = \\frac{(|\\mathrm{rfft}(x_i)|_{1..}, |\\mathrm{rfft}(y_i)|_{1..})}{\\|\\cdot\\|_2}, \\qquad
    S_{ij} = F_i \\cdot F_j \\in [0, 1]

after filling invalid steps by linear interpolation between the valid neighbours (holding the first / last
valid value before / after them): a zero at a gap would be a jump in the sequence, whose spectrum is broadband
and swamps the motion's. The DC bin (index 0, the mean position) is dropped, so a constant offset of the
positions changes nothing; what is compared is the shape of the motion. Magnitudes discard phase, so the
measure is also blind to the sign of a coordinate sequence (east vs west); an agent that never moves has a zero
spectrum and similarity 0 to everything, itself included.
"""

from __future__ import annotations

from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TrajectorySimilarity",
    "direction_similarity",
    "fill_invalid",
    "pairwise_similarity",
    "spectrum_similarity",
]


class TrajectorySimilarity(StrEnum):
    """Which trajectory similarity mining uses (see the module docstring)."""

    COSINE = "cosine"  #: :func:`direction_similarity`
    FFT = "fft"  #: :func:`spectrum_similarity`


def _check(positions: Tensor, valid: Tensor) -> None:
    if positions.dim() != 3 or positions.shape[-1] != 2 or valid.shape != positions.shape[:2]:
        raise ValueError(
            f"expected positions [B, T, 2] and valid [B, T], got {tuple(positions.shape)} and {tuple(valid.shape)}"
        )


def _end_points(positions: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The first and last valid point of each row, ``[B, 2]`` each (zeros for a row without one)."""
    b, t = valid.shape
    steps = torch.arange(t, device=valid.device).expand(b, t)
    first = torch.where(valid, steps, t).amin(dim=1).clamp(max=t - 1)
    last = torch.where(valid, steps, -1).amax(dim=1).clamp(min=0)
    pick = valid.any(dim=1, keepdim=True)
    p_first = torch.where(pick, positions[torch.arange(b), first], 0.0)
    p_last = torch.where(pick, positions[torch.arange(b), last], 0.0)
    return p_first, p_last


def direction_similarity(positions: Tensor, valid: Tensor, min_step_m: float = 1e-3) -> Tensor:
    """``[B, B]`` mean cosine of the step directions (the module docstring's **cosine**), in [-1, 1].

    Args:
        positions: ``[B, T, 2]`` (m).
        valid: ``[B, T] bool``.
        min_step_m: a step moving no more than this (m) has no direction and does not count.
    """
    _check(positions, valid)
    positions, valid = positions.float(), valid.bool()
    b, t = valid.shape
    if b == 0 or t == 0:
        return positions.new_zeros(b, b)
    disp = positions[:, 1:] - positions[:, :-1]
    length = disp.norm(dim=-1)
    moving = valid[:, 1:] & valid[:, :-1] & (length > min_step_m)
    # torch.where, not a product: an invalid step may hold anything (also inf), which must not reach the sums
    unit = torch.where(moving[..., None], disp / length.clamp_min(min_step_m)[..., None], 0.0).reshape(b, -1)
    weight = moving.float()
    dots, count = unit @ unit.T, weight @ weight.T
    p_first, p_last = _end_points(positions, valid)
    chord = p_last - p_first
    chord_unit = torch.where(
        (chord.norm(dim=-1) > min_step_m)[:, None], F.normalize(chord, dim=-1, eps=min_step_m), 0.0
    )
    fallback = chord_unit @ chord_unit.T
    return torch.where(count > 0, dots / count.clamp_min(1.0), fallback).clamp(-1.0, 1.0)


def fill_invalid(positions: Tensor, valid: Tensor) -> Tensor:
    """``[B, T, 2]`` positions with each invalid step linearly interpolated between the nearest valid steps
    before and after it; before the first (after the last) valid step, the first (last) valid value is held. A
    row without a valid step becomes zeros."""
    _check(positions, valid)
    valid = valid.bool()
    b, t = valid.shape
    if t == 0:
        return positions.clone()
    steps = torch.arange(t, device=valid.device).expand(b, t)
    # the last valid step at or before t (-1: none) and the first at or after it (T: none)
    before = torch.where(valid, steps, -1).cummax(dim=1).values
    after = torch.where(valid, steps, t).flip(1).cummin(dim=1).values.flip(1)
    has_before, has_after = before >= 0, after < t
    lo = before.clamp(0, t - 1)
    hi = after.clamp(0, t - 1)
    p_lo = positions.gather(1, lo[..., None].expand(-1, -1, 2))
    p_hi = positions.gather(1, hi[..., None].expand(-1, -1, 2))
    span = (after - before).clamp_min(1)
    w = torch.where(has_before & has_after, (steps - before) / span, 0.0)[..., None].to(positions.dtype)
    inner = p_lo + w * (p_hi - p_lo)
    out = torch.where((has_before & has_after)[..., None], inner, torch.where(has_before[..., None], p_lo, p_hi))
    return torch.where((has_before | has_after)[..., None], out, 0.0)


def spectrum_similarity(positions: Tensor, valid: Tensor) -> Tensor:
    """``[B, B]`` cosine of the magnitude spectra without DC (the module docstring's **fft**), in [0, 1].

    Args:
        positions: ``[B, T, 2]`` (m).
        valid: ``[B, T] bool``.
    """
    _check(positions, valid)
    filled = fill_invalid(positions.float(), valid)
    b = filled.shape[0]
    magnitude = torch.fft.rfft(filled, dim=1).abs()[:, 1:]  # [B, T // 2, 2], DC dropped
    # x spectrum then y spectrum: concatenated per trajectory
    spectrum = F.normalize(magnitude.transpose(1, 2).reshape(b, -1), dim=-1)
    return (spectrum @ spectrum.T).clamp(0.0, 1.0)


def pairwise_similarity(kind: TrajectorySimilarity | str, positions: Tensor, valid: Tensor) -> Tensor:
    """``[B, B]`` similarity of the given kind (:class:`TrajectorySimilarity` or its value)."""
    kind = TrajectorySimilarity(kind)
    if kind is TrajectorySimilarity.COSINE:
        return direction_similarity(positions, valid)
    return spectrum_similarity(positions, valid)
