"""Resumable, rank-sharded, size-aware batching (smartpretrain.data.batching) and per-scene seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from smartpretrain.data.batching import (
    EpochBatchSampler,
    MixtureOrder,
    ResumableDataLoader,
    SampleKey,
    ShardSampler,
    ShuffledOrder,
    sample_seed,
)
from smartpretrain.data.sampler import MixtureSampler


def _flat(batches: list[np.ndarray]) -> list[int]:
    return [int(i) for b in batches for i in b]


def test_order_depends_only_on_seed_and_epoch() -> None:
    a = EpochBatchSampler(ShuffledOrder(range(20), seed=3), batch_size=4, seed=3)
    b = EpochBatchSampler(ShuffledOrder(range(20), seed=3), batch_size=4, seed=3)
    torch.manual_seed(123)  # the global generator plays no part
    np.random.seed(5)
    assert [list(x) for x in a] == [list(x) for x in b]
    first = _flat(a.batches())
    a.set_epoch(1)
    assert _flat(a.batches()) != first and sorted(_flat(a.batches())) == list(range(20))
    assert sorted(first) == list(range(20))


def test_per_sample_seeds_depend_on_seed_epoch_and_scene() -> None:
    sampler = EpochBatchSampler(ShuffledOrder(range(6), seed=0), batch_size=3, seed=7)
    keys = [k for batch in sampler for k in batch]
    assert all(isinstance(k, SampleKey) and k.seed == sample_seed(7, 0, k.index) for k in keys)
    assert len({k.seed for k in keys}) == 6
    assert sample_seed(7, 1, 0) != sample_seed(7, 0, 0) != sample_seed(8, 0, 0)


def test_resume_skips_the_trained_batches_of_the_saved_epoch() -> None:
    def make() -> EpochBatchSampler:
        return EpochBatchSampler(ShuffledOrder(range(10), seed=1), batch_size=2, seed=1)

    full = make()
    full.set_epoch(2)
    expected = [list(b) for b in full]
    interrupted = make()
    interrupted.set_epoch(2)
    interrupted.batches_done = 3
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches_done": 3}

    restored = make()  # a fresh process: epoch 0 until restored
    restored.load_state_dict(state)
    assert [list(b) for b in restored] == expected[3:]
    assert [list(b) for b in restored] == expected  # the skip applies once; the next pass is the whole epoch


def test_state_saved_at_an_epoch_end_resumes_at_the_next_epoch() -> None:
    sampler = EpochBatchSampler(ShuffledOrder(range(8), seed=0), batch_size=2, seed=0, drop_last=True)
    sampler.batches_done = len(sampler)
    restored = EpochBatchSampler(ShuffledOrder(range(8), seed=0), batch_size=2, seed=0, drop_last=True)
    restored.load_state_dict(sampler.state_dict())
    assert restored.epoch == 1 and len(list(restored)) == 4


class _Keys:
    def __len__(self) -> int:
        return 12

    def __getitem__(self, key: SampleKey) -> int:
        return key.index


def test_resumable_loader_round_trips_its_position() -> None:
    sampler = EpochBatchSampler(ShuffledOrder(range(12), seed=2), batch_size=3, seed=2)
    loader = ResumableDataLoader(_Keys(), batch_sampler=sampler, collate_fn=lambda b: b)
    full = list(loader)
    sampler.batches_done = 2
    other = ResumableDataLoader(_Keys(), batch_sampler=EpochBatchSampler(
        ShuffledOrder(range(12), seed=2), batch_size=3, seed=2), collate_fn=lambda b: b)  # fmt: skip
    other.load_state_dict(loader.state_dict())
    assert list(other) == full[2:]


def test_ranks_are_disjoint_and_cover_the_epoch() -> None:
    seen = []
    for rank in range(3):
        s = EpochBatchSampler(ShuffledOrder(range(10), seed=4), batch_size=2, seed=4, num_replicas=3, rank=rank)
        seen.append(_flat(s.batches()))
    assert len({len(x) for x in seen}) == 1  # equal counts (padded by wrap-around like DistributedSampler)
    assert set().union(*map(set, seen)) == set(range(10))


def test_budget_closes_batches_and_keeps_rank_counts_equal() -> None:
    costs = np.array([10, 2000, 30, 40, 50, 60, 70, 80, 90, 100], dtype=np.int64)
    for rank in range(2):
        s = EpochBatchSampler(ShuffledOrder(range(10), seed=0), batch_size=4, seed=0, costs=costs, max_cost=150,
                              num_replicas=2, rank=rank)  # fmt: skip
        for batch in s.batches():
            assert len(batch) <= 4
            assert costs[batch].sum() <= 150 or len(batch) == 1  # an over-budget scene goes alone
        counts = [len(EpochBatchSampler(ShuffledOrder(range(10), seed=0), batch_size=4, seed=0, costs=costs,
                                        max_cost=150, num_replicas=2, rank=r)) for r in range(2)]  # fmt: skip
        assert counts[0] == counts[1]
    single = EpochBatchSampler(ShuffledOrder(range(10), seed=0), batch_size=4, seed=0, costs=costs, max_cost=150)
    assert sorted(_flat(single.batches())) == list(range(10))  # nothing lost
    big = [b for b in single.batches() if 1 in b.tolist()]
    assert [len(b) for b in big] == [1]
    with pytest.raises(ValueError, match="both costs and max_cost"):
        EpochBatchSampler(ShuffledOrder(range(3)), batch_size=2, costs=costs)


def test_mixture_order_follows_the_mixture_sampler() -> None:
    def make(rank: int, world: int) -> MixtureSampler:
        return MixtureSampler([5, 7], [1.0, 1.0], num_samples=8, seed=9, num_replicas=world, rank=rank)

    s = EpochBatchSampler(MixtureOrder(make), batch_size=2, seed=9)
    s.set_epoch(1)
    reference = make(0, 1)
    reference.set_epoch(1)
    assert _flat(s.batches()) == list(reference)


def test_shard_sampler_sees_every_scene_once_without_padding() -> None:
    parts = [[k.index for k in ShardSampler(range(5), num_replicas=2, rank=r)] for r in range(2)]
    assert sorted(parts[0] + parts[1]) == [0, 1, 2, 3, 4]  # DistributedSampler would give 6 (one twice)
    keys = list(ShardSampler(range(3), seed=1))
    assert keys == list(ShardSampler(range(3), seed=1))


class _RandomDataset:
    """A dataset whose items draw from the global generators (like the view sampler does)."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, key: SampleKey) -> tuple[int, float, float]:
        from smartpretrain.data.datamodule import _with_seed

        return _with_seed(key.seed, lambda i: (i, float(np.random.rand()), float(torch.rand(()))), key.index)


@pytest.mark.parametrize("workers", [0, 2])
def test_scene_randomness_does_not_depend_on_workers(workers: int) -> None:
    def items(num_workers: int) -> list:
        sampler = EpochBatchSampler(ShuffledOrder(range(6), seed=5), batch_size=2, seed=5)
        loader = DataLoader(_RandomDataset(), batch_sampler=sampler, num_workers=num_workers,
                            collate_fn=lambda b: b, generator=torch.Generator())  # fmt: skip
        return [x for batch in loader for x in batch]

    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    got = items(workers)
    assert got == items(0)
    if workers == 0:  # loading in the main process leaves its generator untouched
        assert torch.equal(torch.random.get_rng_state(), before)


def test_lightning_moves_the_batch_sampler_to_each_epoch() -> None:
    # Lightning sets the epoch on `loader.sampler` and `loader.batch_sampler.sampler`, never on the batch sampler
    # itself: without the hook every epoch would repeat epoch 0's order and per-scene seeds
    from lightning_fabric.utilities.data import _set_sampler_epoch

    sampler = EpochBatchSampler(ShuffledOrder(range(12), seed=2), batch_size=3, seed=2)
    loader = ResumableDataLoader(_Keys(), batch_sampler=sampler, collate_fn=lambda b: b)
    first = list(loader)
    _set_sampler_epoch(loader, 1)
    assert sampler.epoch == 1
    second = list(loader)
    assert second != first  # a new order
    assert next(iter(sampler))[0].seed == sample_seed(2, 1, second[0][0])  # and the epoch's own per-scene seeds
    # a restored mid-epoch position survives Lightning's set_epoch of that same epoch
    sampler.load_state_dict({"epoch": 1, "batches_done": 2})
    _set_sampler_epoch(loader, 1)
    assert list(loader) == second[2:]
