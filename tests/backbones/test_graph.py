"""Plain-torch radius graphs against a brute-force reference (torch-cluster semantics, nearest-k cut)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from smartpretrain.backbones.graph import angle_between, radius, radius_graph, relative_polar, wrap_angle


def brute_radius(x, y, r, batch_x=None, batch_y=None, k=32, exclude_self=False) -> set[tuple[int, int]]:
    """{(query i in y, neighbour j in x)}: same batch, ||x_j - y_i|| <= r, the k nearest (ties: lower j)."""
    batch_x = torch.zeros(len(x), dtype=torch.long) if batch_x is None else batch_x
    batch_y = torch.zeros(len(y), dtype=torch.long) if batch_y is None else batch_y
    edges = set()
    for i in range(len(y)):
        cands = []
        for j in range(len(x)):
            if batch_x[j] != batch_y[i] or (exclude_self and i == j):
                continue
            d2 = float(((x[j] - y[i]).double() ** 2).sum())
            if d2 <= r * r:
                cands.append((d2, j))
        edges |= {(i, j) for _, j in sorted(cands)[:k]}
    return edges


def as_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    assert edge_index.dtype == torch.long and edge_index.dim() == 2 and edge_index.size(0) == 2
    pairs = [tuple(p) for p in edge_index.t().tolist()]
    assert len(pairs) == len(set(pairs)), "duplicate edges"
    return set(pairs)


def random_batched(n: int, num_batches: int, seed: int, dim: int = 2, scale: float = 10.0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, dim, generator=g) * scale
    batch = torch.sort(torch.randint(0, num_batches, (n,), generator=g)).values
    return pos, batch


@pytest.mark.parametrize("num_batches", [1, 3, 17])
@pytest.mark.parametrize("block", [7, 1 << 22])
def test_radius_matches_brute_force(num_batches, block):
    x, bx = random_batched(120, num_batches, seed=1)
    y, by = random_batched(70, num_batches, seed=2)
    for k in (300, 4):
        got = radius(x, y, 3.0, bx, by, max_num_neighbors=k, max_pairs_per_block=block)
        assert as_set(got) == brute_radius(x, y, 3.0, bx, by, k=k)


@pytest.mark.parametrize("num_batches", [1, 5, 40])
@pytest.mark.parametrize("block", [5, 1 << 22])
def test_radius_graph_matches_brute_force(num_batches, block):
    x, b = random_batched(150, num_batches, seed=3, dim=3)
    for k, loop in ((300, False), (300, True), (3, False), (3, True)):
        got = radius_graph(x, 2.5, b, loop=loop, max_num_neighbors=k, max_pairs_per_block=block)
        ref = brute_radius(x, x, 2.5, b, b, k=k, exclude_self=not loop)
        # flow source_to_target: row 0 = neighbour j, row 1 = centre i
        assert as_set(got) == {(j, i) for i, j in ref}
        if not loop:
            assert bool((got[0] != got[1]).all())
        assert as_set(radius_graph(x, 2.5, b, loop=loop, max_num_neighbors=k, flow="target_to_source")) == ref


def test_rows_are_queries_and_sorted():
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.5, 0.0]])
    y = torch.tensor([[0.0, 0.1], [10.0, 0.2]])
    got = radius(x, y, 1.0)
    assert got.tolist() == [[0, 0, 1], [0, 2, 1]]


def test_ties_at_radius_are_included():
    # integer grid: squared distances are exact, so points at exactly r must be in (<= r), just beyond out
    xs = torch.arange(-6, 7, dtype=torch.float)
    grid = torch.cartesian_prod(xs, xs)
    centre = torch.zeros(1, 2)
    got = as_set(radius(grid, centre, 5.0, max_num_neighbors=1000))
    ref = {(0, j) for j in range(len(grid)) if float((grid[j] ** 2).sum()) <= 25.0}
    assert got == ref
    on_circle = [j for j in range(len(grid)) if float((grid[j] ** 2).sum()) == 25.0]
    assert len(on_circle) == 12 and all((0, j) in got for j in on_circle)
    assert (0, int(((grid - torch.tensor([5.0, 1.0])).abs().sum(-1) == 0).nonzero())) not in got


def test_max_num_neighbors_keeps_nearest_with_index_ties():
    # 10 points at distance 1..10 along x, plus two at distance 2 (tie); k = 3 keeps d=1 and the two d=2 with
    # the lowest indices
    x = torch.tensor([[float(d), 0.0] for d in range(1, 11)] + [[0.0, 2.0], [-2.0, 0.0]])
    centre = torch.zeros(1, 2)
    got = radius(x, centre, 100.0, max_num_neighbors=3)
    assert got[1].tolist() == [0, 1, 10]
    got = radius(x, centre, 100.0, max_num_neighbors=1)
    assert got[1].tolist() == [0]


def test_empty_and_disjoint_inputs():
    x, bx = random_batched(20, 2, seed=4)
    empty = torch.zeros(0, 2)
    assert radius(empty, x, 1.0).shape == (2, 0)
    assert radius(x, empty, 1.0).shape == (2, 0)
    assert radius_graph(empty, 1.0).shape == (2, 0)
    assert radius_graph(empty, 1.0, batch=torch.zeros(0, dtype=torch.long)).shape == (2, 0)
    assert radius_graph(x[:1], 1.0).shape == (2, 0)
    # queries in batch entries that x does not have
    y = torch.rand(5, 2)
    assert radius(x, y, 100.0, bx, torch.full((5,), 7)).shape == (2, 0)
    assert radius(x, x, 1.0, max_num_neighbors=0).shape == (2, 0)


def test_unsorted_batch_vectors():
    x, bx = random_batched(80, 4, seed=5)
    y, by = random_batched(60, 4, seed=6)
    px, py = torch.randperm(80), torch.randperm(60)
    got = radius(x[px], y[py], 3.0, bx[px], by[py], max_num_neighbors=5)
    ref = brute_radius(x[px], y[py], 3.0, bx[px], by[py], k=5)
    assert as_set(got) == ref
    got = radius_graph(x[px], 3.0, bx[px], max_num_neighbors=4)
    ref = brute_radius(x[px], x[px], 3.0, bx[px], bx[px], k=4, exclude_self=True)
    assert as_set(got) == {(j, i) for i, j in ref}


def test_many_scenes_of_different_sizes_with_empty_ones():
    g = torch.Generator().manual_seed(7)
    sizes = torch.randint(0, 12, (60,), generator=g)
    sizes[::7] = 0
    b = torch.repeat_interleave(torch.arange(60), sizes)
    x = torch.rand(len(b), 2, generator=g) * 5
    for block in (3, 50, 1 << 22):
        got = radius_graph(x, 1.5, b, max_num_neighbors=6, max_pairs_per_block=block)
        ref = brute_radius(x, x, 1.5, b, b, k=6, exclude_self=True)
        assert as_set(got) == {(j, i) for i, j in ref}


def test_memory_is_bounded_for_a_large_scene():
    """20k x 20k points in one scene (400M pairs) in a fresh process: peak RSS stays far below all-pairs."""
    script = textwrap.dedent(
        """
        import resource, torch
        from smartpretrain.backbones.graph import radius_graph
        torch.manual_seed(0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        x = torch.rand(20000, 2) * 1000
        e = radius_graph(x, 10.0, max_num_neighbors=8)
        d = (x[e[0]] - x[e[1]]).norm(dim=-1)
        assert bool((d <= 10.0 + 1e-4).all()) and bool((e[0] != e[1]).all())
        assert int(torch.bincount(e[1], minlength=20000).max()) <= 8 and e.size(1) > 50000
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    growth_mb = float(res.stdout.strip().splitlines()[-1])
    # all pairs would need >= 1.6 GB for the float32 distances alone
    assert growth_mb < 800, growth_mb


def test_relative_geometry_helpers():
    a = torch.tensor([3 * torch.pi, -torch.pi, torch.pi, 0.5])
    w = wrap_angle(a)
    assert bool(((w >= -torch.pi) & (w < torch.pi)).all())
    assert torch.allclose(torch.cos(w), torch.cos(a), atol=1e-6)
    assert torch.allclose(
        angle_between(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])), torch.tensor([0.5 * torch.pi])
    )
    # j at (0, 1), i at origin heading +y: distance 1, straight ahead, relative heading pi/2 - pi/2 = 0
    feat = relative_polar(
        torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.tensor([torch.pi / 2]), torch.tensor([torch.pi / 2])
    )
    assert torch.allclose(feat, torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6)
