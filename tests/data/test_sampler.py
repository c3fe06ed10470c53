"""The mixture sampler: proportions, disjoint DDP shards, determinism, cycling without replacement, errors."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from smartpretrain.data.sampler import MixtureSampler, mixture_weights

SIZES = [500, 3000, 40, 800]
WEIGHTS = [0.5, 0.2, 0.2, 0.1]


def _proportions(sampler: MixtureSampler, indices: list[int]) -> np.ndarray:
    counts = Counter(sampler.component_of(i) for i in indices)
    return np.array([counts.get(c, 0) for c in range(len(sampler.sizes))]) / len(indices)


def _all_ranks(num_replicas: int, **kwargs: object) -> list[list[int]]:
    return [list(MixtureSampler(rank=r, num_replicas=num_replicas, **kwargs)) for r in range(num_replicas)]


# ---------------------------------------------------------------- weights


def test_mixture_weights_normalise_and_default_by_size() -> None:
    np.testing.assert_allclose(mixture_weights([10, 30], [2, 6]), [0.25, 0.75])
    np.testing.assert_allclose(mixture_weights([10, 30, 0]), [0.25, 0.75, 0.0])
    np.testing.assert_allclose(mixture_weights([0, 5], [0.0, 3.0]), [0.0, 1.0])


@pytest.mark.parametrize(
    ("sizes", "weights", "match"),
    [
        ([10, 20], [1.0], "2 sizes but 1 weights"),
        ([10, 20], [1.0, 1.0, 1.0], "2 sizes but 3 weights"),
        ([10, 20], [1.0, -0.5], "component 1: weight must be non-negative"),
        ([10, 20], [float("nan"), 1.0], "component 0: weight must be finite"),
        ([10, 20], [1.0, float("inf")], "component 1: weight must be finite"),
        ([10, 20], [0.0, 0.0], "all mixture weights are zero"),
        ([10, 0], [1.0, 0.5], "component 1 is empty"),
        ([0, 0], None, "all components are empty"),
        ([], None, "at least one component"),
        ([10, -1], None, "component 1: size must be a non-negative integer"),
    ],
)
def test_bad_weights_raise(sizes: list[int], weights: list[float] | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mixture_weights(sizes, weights)
    with pytest.raises(ValueError, match=match):
        MixtureSampler(sizes, weights, num_samples=10)


# ---------------------------------------------------------------- proportions


@pytest.mark.parametrize("replacement", [False, True])
def test_proportions_follow_weights(replacement: bool) -> None:
    sampler = MixtureSampler(SIZES, WEIGHTS, num_samples=10_000, replacement=replacement, seed=3)
    indices = list(sampler)
    assert len(indices) == 10_000
    assert np.abs(_proportions(sampler, indices) - np.array(WEIGHTS)).max() < 0.02
    assert all(0 <= i < sum(SIZES) for i in indices)


@pytest.mark.parametrize("replacement", [False, True])
def test_proportions_follow_weights_across_ranks(replacement: bool) -> None:
    per_rank = _all_ranks(2, sizes=SIZES, weights=WEIGHTS, num_samples=10_000, replacement=replacement, seed=5)
    sampler = MixtureSampler(SIZES, WEIGHTS, num_samples=10_000, num_replicas=2, rank=0)
    indices = per_rank[0] + per_rank[1]
    assert len(indices) == 10_000
    assert np.abs(_proportions(sampler, indices) - np.array(WEIGHTS)).max() < 0.02


@pytest.mark.parametrize("replacement", [False, True])
def test_default_weights_are_by_size(replacement: bool) -> None:
    sampler = MixtureSampler(SIZES, num_samples=10_000, replacement=replacement)
    expected = np.array(SIZES) / sum(SIZES)
    np.testing.assert_allclose(sampler.probabilities, expected)
    assert np.abs(_proportions(sampler, list(sampler)) - expected).max() < 0.02


def test_zero_weight_component_is_never_drawn() -> None:
    # A zero-weight component may even be smaller than num_replicas.
    per_rank = _all_ranks(3, sizes=[100, 2, 50], weights=[1.0, 0.0, 1.0], num_samples=600, seed=1)
    sampler = MixtureSampler([100, 2, 50], [1.0, 0.0, 1.0], num_samples=600, num_replicas=3, rank=0)
    components = {sampler.component_of(i) for indices in per_rank for i in indices}
    assert components == {0, 2}


def test_largest_remainder_counts_are_exact() -> None:
    sampler = MixtureSampler([10, 10, 10], [1, 1, 1], num_samples=10)
    assert sampler.counts.tolist() == [4, 3, 3]  # tie on the remainder goes to the lower component
    assert Counter(sampler.component_of(i) for i in sampler) == {0: 4, 1: 3, 2: 3}
    sampler = MixtureSampler(SIZES, WEIGHTS, num_samples=1001, num_replicas=2, rank=1)
    assert sampler.counts.tolist() == [251, 100, 100, 50]
    assert sampler.counts.sum() == len(sampler) == 501


# ---------------------------------------------------------------- DDP sharding


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("num_replicas", [2, 3])
def test_ranks_never_share_an_index(replacement: bool, num_replicas: int) -> None:
    kwargs = dict(sizes=SIZES, weights=WEIGHTS, num_samples=7001, replacement=replacement, seed=11)
    for epoch in (0, 1):
        samplers = [MixtureSampler(num_replicas=num_replicas, rank=r, **kwargs) for r in range(num_replicas)]
        for s in samplers:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in samplers]
        assert {len(x) for x in per_rank} == {-(-7001 // num_replicas)}  # equal lengths = ceil
        for a in range(num_replicas):
            for b in range(a + 1, num_replicas):
                assert not set(per_rank[a]) & set(per_rank[b])
        for s, indices in zip(samplers, per_rank, strict=True):
            own = set(np.concatenate([s.shard_indices(c) for c in range(len(SIZES))]).tolist())
            assert set(indices) <= own


@pytest.mark.parametrize("num_replicas", [1, 2, 3])
def test_shards_partition_each_component(num_replicas: int) -> None:
    samplers = [MixtureSampler(SIZES, WEIGHTS, num_replicas=num_replicas, rank=r) for r in range(num_replicas)]
    for c, (offset, size) in enumerate(zip(samplers[0].offsets, SIZES, strict=True)):
        shards = [s.shard_indices(c) for s in samplers]
        joined = np.concatenate(shards)
        assert len(joined) == size and set(joined.tolist()) == set(range(offset, offset + size))
        assert max(len(x) for x in shards) - min(len(x) for x in shards) <= 1


def test_lengths_equal_when_num_samples_not_divisible() -> None:
    lengths = [len(x) for x in _all_ranks(4, sizes=[7, 9], num_samples=13)]
    assert lengths == [4, 4, 4, 4]
    assert [len(MixtureSampler([7, 9], num_samples=13, num_replicas=4, rank=r)) for r in range(4)] == lengths


# ---------------------------------------------------------------- determinism


def test_same_seed_and_epoch_is_deterministic() -> None:
    for replacement in (False, True):
        a = MixtureSampler(SIZES, WEIGHTS, num_samples=2000, replacement=replacement, seed=7, num_replicas=2, rank=1)
        b = MixtureSampler(SIZES, WEIGHTS, num_samples=2000, replacement=replacement, seed=7, num_replicas=2, rank=1)
        a.set_epoch(4)
        b.set_epoch(4)
        assert list(a) == list(b)
        assert list(a) == list(a)  # iterating again does not advance any hidden state


def test_epoch_and_seed_change_the_sequence() -> None:
    s = MixtureSampler(SIZES, WEIGHTS, num_samples=2000, seed=7)
    epoch0 = list(s)
    s.set_epoch(1)
    epoch1 = list(s)
    assert epoch0 != epoch1
    s.set_epoch(0)
    assert list(s) == epoch0
    assert list(MixtureSampler(SIZES, WEIGHTS, num_samples=2000, seed=8)) != epoch0


# ---------------------------------------------------------------- without replacement


def test_by_size_without_replacement_is_a_plain_shuffle() -> None:
    sizes = [13, 250, 1, 77, 0, 409]
    s = MixtureSampler(sizes, seed=2)
    indices = list(s)
    assert len(indices) == sum(sizes)
    assert sorted(indices) == list(range(sum(sizes)))
    assert indices != sorted(indices)


def test_oversampled_component_cycles_through_its_shard_before_repeating() -> None:
    sizes, weights = [40, 1000], [0.5, 0.5]
    for rank in (0, 1):
        s = MixtureSampler(sizes, weights, num_samples=1000, num_replicas=2, rank=rank, seed=4)
        small = [i for i in s if i < 40]
        shard = s.shard_indices(0).tolist()
        assert len(shard) == 20 and len(small) == 250
        assert small[:20] == shard  # first pass walks the shard in order
        passes = [small[k : k + 20] for k in range(0, len(small), 20)]
        for p in passes[:-1]:
            assert sorted(p) == sorted(shard)  # every full pass uses each index exactly once
        assert len(set(passes[-1])) == len(passes[-1])
        assert passes[1] != passes[2]  # later passes are fresh permutations


def test_with_replacement_repeats_within_a_pass() -> None:
    s = MixtureSampler([40, 1000], [0.5, 0.5], num_samples=1000, replacement=True, seed=4)
    small = [i for i in s if i < 40]
    assert len(small) == 500
    full_windows = [small[k : k + 40] for k in range(0, 480, 40)]
    assert any(len(set(w)) < 40 for w in full_windows)  # uniform draws, not a cycle through the shard


def test_components_are_interleaved() -> None:
    s = MixtureSampler(SIZES, WEIGHTS, num_samples=2000, seed=6)
    labels = [s.component_of(i) for i in s]
    changes = sum(a != b for a, b in pairwise(labels))
    assert changes > 1000  # shuffled labels switch component often; blocks per component would switch 3 times
    assert set(labels[:100]) == {0, 1, 2, 3}


# ---------------------------------------------------------------- errors and defaults


@pytest.mark.parametrize(("rank", "num_replicas"), [(2, 2), (-1, 2), (5, 3), (1, 1)])
def test_rank_out_of_range(rank: int, num_replicas: int) -> None:
    with pytest.raises(ValueError, match=f"rank {rank} out of range"):
        MixtureSampler([10, 10], num_replicas=num_replicas, rank=rank)


def test_num_replicas_must_be_positive() -> None:
    with pytest.raises(ValueError, match="num_replicas must be at least 1"):
        MixtureSampler([10, 10], num_replicas=0, rank=0)


def test_component_smaller_than_num_replicas() -> None:
    with pytest.raises(ValueError, match="component 1 has 2 scenes, fewer than num_replicas=3"):
        MixtureSampler([100, 2, 50], [1.0, 0.1, 1.0], num_replicas=3, rank=0)
    MixtureSampler([100, 2, 50], [1.0, 0.1, 1.0], num_replicas=2, rank=1)  # enough scenes for 2 ranks


@pytest.mark.parametrize("num_samples", [0, -3, 2.5])
def test_bad_num_samples(num_samples: float) -> None:
    with pytest.raises(ValueError, match="num_samples"):
        MixtureSampler([10, 10], num_samples=num_samples)  # type: ignore[arg-type]


def test_defaults_without_process_group() -> None:
    s = MixtureSampler([5, 6])
    assert (s.num_replicas, s.rank, s.num_samples, len(s)) == (1, 0, 11, 11)


def test_defaults_from_initialised_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 4)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 3)
    s = MixtureSampler([8, 8], num_samples=10)
    assert (s.num_replicas, s.rank, len(s)) == (4, 3, 3)


def test_component_of_offsets_and_repr() -> None:
    s = MixtureSampler(SIZES, WEIGHTS, replacement=True)
    assert s.offsets == (0, 500, 3500, 3540)
    assert [s.component_of(i) for i in (0, 499, 500, 3499, 3500, 3539, 3540, 4339)] == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(IndexError):
        s.component_of(4340)
    with pytest.raises(IndexError):
        s.component_of(-1)
    text = repr(s)
    assert "sizes=[500, 3000, 40, 800]" in text and "weights=[0.5, 0.2, 0.2, 0.1]" in text
    assert "replacement=True" in text
    assert "weights=by size" in repr(MixtureSampler([3, 4]))
    s.probabilities[0] = 9.0  # a copy: the sampler is unaffected
    assert s.probabilities[0] == pytest.approx(0.5)


# ---------------------------------------------------------------- DataLoader


class _Toy(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return index


def test_dataloader_yields_expected_count() -> None:
    sampler = MixtureSampler(SIZES, WEIGHTS, num_samples=1234, num_replicas=2, rank=1, seed=9)
    loader = DataLoader(_Toy(sum(SIZES)), batch_size=32, sampler=sampler)
    seen = torch.cat(list(loader)).tolist()
    assert len(seen) == 617 == len(sampler)
    assert seen == list(sampler)
    assert len(loader) == -(-617 // 32)
