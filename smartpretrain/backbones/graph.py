"""Radius graphs in plain torch (no torch-cluster), and the relative-geometry helpers of the graph backbones.

:func:`radius` and :func:`radius_graph` follow torch-cluster's conventions (same arguments, same edge layout,
``distance <= r``). They compare each query only with the points of its own batch entry: the batch vectors of
PyG batches are sorted, so the candidates of a query are one contiguous range of ``x`` (unsorted batch vectors
are sorted first, at the cost of one ``argsort``). The (query, candidate) pairs are enumerated in blocks of at
most about ``max_pairs_per_block`` pairs, so memory stays bounded whatever the number of points, and there is
no Python loop over points or batch entries (only over blocks).

Difference from torch-cluster: when more than ``max_num_neighbors`` points qualify, torch-cluster keeps an
arbitrary subset (the first it meets, which depends on the device and the thread schedule). Here the *nearest*
``max_num_neighbors`` are kept, ties broken by the lower index, so the result is deterministic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: default bound on the number of (query, candidate) pairs whose distances are held at once (~50 bytes each)
MAX_PAIRS_PER_BLOCK = 1 << 22


def _empty_edges(device: torch.device) -> Tensor:
    return torch.empty(2, 0, dtype=torch.long, device=device)


def _sort_by_batch(batch: Tensor) -> Tensor | None:
    """The stable permutation sorting ``batch``, or None when it is already sorted."""
    if batch.numel() < 2 or not bool((batch[1:] < batch[:-1]).any()):
        return None
    return torch.argsort(batch, stable=True)


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distance over the last dim, broadcast, accumulated one coordinate at a time."""
    d2 = a[..., 0] - b[..., 0]
    d2.mul_(d2)
    for k in range(1, a.size(-1)):
        diff = a[..., k] - b[..., k]
        d2.addcmul_(diff, diff)
    return d2


@torch.no_grad()
def _radius(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Tensor | None,
    batch_y: Tensor | None,
    max_num_neighbors: int,
    exclude_self: bool,
    max_pairs_per_block: int,
) -> Tensor:
    """``[2, E]`` (query index into y, neighbour index into x); see :func:`radius`."""
    x = x.view(-1, 1) if x.dim() == 1 else x
    y = y.view(-1, 1) if y.dim() == 1 else y
    device = x.device
    nx, ny = x.size(0), y.size(0)
    if nx == 0 or ny == 0 or max_num_neighbors <= 0:
        return _empty_edges(device)
    batch_x = torch.zeros(nx, dtype=torch.long, device=device) if batch_x is None else batch_x.long()
    batch_y = torch.zeros(ny, dtype=torch.long, device=device) if batch_y is None else batch_y.long()
    perm_x, perm_y = _sort_by_batch(batch_x), _sort_by_batch(batch_y)
    if perm_x is not None:
        x, batch_x = x[perm_x], batch_x[perm_x]
    if perm_y is not None:
        y, batch_y = y[perm_y], batch_y[perm_y]
    num_batches = int(torch.maximum(batch_x.max(), batch_y.max())) + 1

    # candidates of query i: x[start_x[b_i] : start_x[b_i] + count_x[b_i]]
    count_x = torch.bincount(batch_x, minlength=num_batches)
    start_x = torch.cumsum(count_x, 0) - count_x
    cand = count_x[batch_y]  # [ny]
    cum = torch.cumsum(cand, 0)  # inclusive
    total = int(cum[-1])
    if total == 0:
        return _empty_edges(device)
    # blocks of whole queries: a block holds at most max_pairs_per_block + (largest candidate count) pairs
    num_blocks = math.ceil(total / max_pairs_per_block)
    marks = torch.arange(1, num_blocks + 1, device=device) * max_pairs_per_block
    bounds = torch.searchsorted(cum, marks, right=True).clamp(max=ny)
    bounds = torch.unique(torch.cat([bounds.new_zeros(1), bounds, bounds.new_full((1,), ny)]))
    bounds_list = bounds.tolist()
    cum_at = torch.cat([cum.new_zeros(1), cum])[bounds].tolist()  # pairs before each bound

    r2 = float(r) * float(r)
    cum_excl = cum - cand
    # blocks whose queries all belong to one batch entry compare against one contiguous slice of x (no gathers)
    first_batch = batch_y[bounds[:-1]].tolist()
    last_batch = batch_y[bounds[1:] - 1].tolist()
    start_list, count_list = start_x.tolist(), count_x.tolist()
    rows_out, cols_out = [], []
    for b in range(len(bounds_list) - 1):
        s, e = bounds_list[b], bounds_list[b + 1]
        n = cum_at[b + 1] - cum_at[b]
        if n == 0:
            continue
        if first_batch[b] == last_batch[b]:
            x0 = start_list[first_batch[b]]
            seg = x[x0 : x0 + count_list[first_batch[b]]]
            d2 = _sq_dist(y[s:e].unsqueeze(1), seg.unsqueeze(0))  # [e - s, count]
            rows, cols = (d2 <= r2).nonzero(as_tuple=True)
            d2 = d2[rows, cols]
            rows, cols = rows + s, cols + x0
        else:
            # pairs enumerated flat: query i against start_x[b_i] + (0 .. count_x[b_i] - 1)
            local = torch.repeat_interleave(torch.arange(e - s, device=device), cand[s:e], output_size=n)
            shift = start_x[batch_y[s:e]] - (cum_excl[s:e] - cum_at[b])
            rows = local + s
            cols = torch.arange(n, device=device) + shift[local]
            d2 = _sq_dist(y[rows], x[cols])
            keep = d2 <= r2
            rows, cols, d2 = rows[keep], cols[keep], d2[keep]
        if exclude_self:
            orig_rows = rows if perm_y is None else perm_y[rows]
            orig_cols = cols if perm_x is None else perm_x[cols]
            keep = orig_rows != orig_cols
            rows, cols, d2 = rows[keep], cols[keep], d2[keep]
        if rows.numel() == 0:
            continue
        per_row = torch.bincount(rows - s, minlength=e - s)
        if int(per_row.max()) > max_num_neighbors:
            # rank the neighbours of each query by distance (stable: ties keep the lower x index)
            order = torch.argsort(d2, stable=True)
            order = order[torch.argsort(rows[order], stable=True)]
            first = (torch.cumsum(per_row, 0) - per_row)[rows[order] - s]
            rank = torch.arange(order.numel(), device=device) - first
            kept = torch.sort(order[rank < max_num_neighbors]).values
            rows, cols = rows[kept], cols[kept]
        rows_out.append(rows)
        cols_out.append(cols)
    if not rows_out:
        return _empty_edges(device)
    rows, cols = torch.cat(rows_out), torch.cat(cols_out)
    if perm_x is None and perm_y is None:
        return torch.stack([rows, cols])
    rows = rows if perm_y is None else perm_y[rows]
    cols = cols if perm_x is None else perm_x[cols]
    order = torch.argsort(rows * nx + cols)
    return torch.stack([rows[order], cols[order]])


def radius(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    max_num_neighbors: int = 32,
    max_pairs_per_block: int = MAX_PAIRS_PER_BLOCK,
) -> Tensor:
    r"""For each point of ``y``, the points of ``x`` of the same batch entry within distance ``r``.

    .. math:: \mathcal{E} = \{(i, j) : b^y_i = b^x_j,\ \lVert x_j - y_i \rVert_2 \le r\}

    Args:
        x: ``[N, D]`` (or ``[N]``) candidate points.
        y: ``[M, D]`` (or ``[M]``) query points.
        r: radius (inclusive).
        batch_x, batch_y: ``[N]`` / ``[M]`` batch entry of each point (None: all in entry 0); sorted is fastest.
        max_num_neighbors: at most this many neighbours per query: the nearest ones (ties: lower x index).
        max_pairs_per_block: memory bound, see the module docstring.

    Returns:
        ``[2, E]`` long: row 0 indexes ``y`` (queries), row 1 indexes ``x``; sorted by query, then by x index.
    """
    return _radius(x, y, r, batch_x, batch_y, max_num_neighbors, False, max_pairs_per_block)


def radius_graph(
    x: Tensor,
    r: float,
    batch: Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int = 32,
    flow: str = "source_to_target",
    max_pairs_per_block: int = MAX_PAIRS_PER_BLOCK,
) -> Tensor:
    r"""Edges between the points of ``x`` of the same batch entry within distance ``r``.

    .. math:: \mathcal{E} = \{(j, i) : b_i = b_j,\ \lVert x_j - x_i \rVert_2 \le r,\ i \ne j \text{ unless loop}\}

    Each target ``i`` keeps its ``max_num_neighbors`` nearest sources (self excluded before the cut unless
    ``loop``; ties: lower index).

    Returns:
        ``[2, E]`` long. ``flow="source_to_target"``: row 0 = source j (neighbour), row 1 = target i;
        ``"target_to_source"``: the rows swapped.
    """
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"unknown flow {flow!r}")
    edges = _radius(x, x, r, batch, batch, max_num_neighbors, not loop, max_pairs_per_block)
    return edges.flip(0) if flow == "source_to_target" else edges


# ---------------------------------------------------------------------------------------------------------------
# relative geometry of an edge j -> i


def wrap_angle(angle: Tensor) -> Tensor:
    """Map angles into ``[-pi, pi)``."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def angle_between(ctr: Tensor, nbr: Tensor) -> Tensor:
    """Signed angle from the 2D vectors ``ctr`` to ``nbr`` (``[..., 2]``): ``atan2(ctr x nbr, ctr . nbr)``."""
    cross = ctr[..., 0] * nbr[..., 1] - ctr[..., 1] * nbr[..., 0]
    dot = (ctr[..., :2] * nbr[..., :2]).sum(-1)
    return torch.atan2(cross, dot)


def relative_polar(pos_src: Tensor, pos_dst: Tensor, theta_dst: Tensor, theta_src: Tensor | None = None) -> Tensor:
    r"""The polar edge features of QCNet-like models, in the frame of the target.

    With :math:`\Delta p = p_j - p_i` (xy): :math:`[\lVert \Delta p \rVert,\ \angle(e_{\theta_i}, \Delta p),
    \ \mathrm{wrap}(\theta_j - \theta_i)]`, the last one only when ``theta_src`` is given.

    Returns:
        ``[E, 2]`` or ``[E, 3]``.
    """
    rel = pos_src[..., :2] - pos_dst[..., :2]
    heading = torch.stack([theta_dst.cos(), theta_dst.sin()], dim=-1)
    feats = [torch.linalg.vector_norm(rel, dim=-1), angle_between(heading, rel)]
    if theta_src is not None:
        feats.append(wrap_angle(theta_src - theta_dst))
    return torch.stack(feats, dim=-1)
