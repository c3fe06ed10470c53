"""Trajectory similarities, triplet mining and the triplet loss on hand-made trajectories and embeddings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from smartpretrain.embeddings.mining import MiningSchedule, MiningStrategy, Triplets, mine_triplets, triplet_loss
from smartpretrain.embeddings.similarity import (
    TrajectorySimilarity,
    direction_similarity,
    fill_invalid,
    pairwise_similarity,
    spectrum_similarity,
)

T = 20
MARGIN = 0.5


def east(speed: float) -> Tensor:
    return torch.stack([speed * torch.arange(T, dtype=torch.float32), torch.zeros(T)], dim=-1)


def turn_north(radius: float) -> Tensor:
    theta = torch.linspace(0, math.pi / 2, T)
    return torch.stack([radius * torch.sin(theta), radius * (1 - torch.cos(theta))], dim=-1)


def six() -> tuple[Tensor, Tensor]:
    """Items 0-2 go straight east, 3-5 turn north."""
    positions = torch.stack([east(1.0), east(1.5), east(2.0), turn_north(10.0), turn_north(12.0), turn_north(14.0)])
    return positions, torch.ones(6, T, dtype=torch.bool)


#: anchor 0 at the origin, its positives 1 and 2 both at distance 1; negatives 3 (d = 0.5, hard),
#: 4 (d = 1.2, semi-hard for margin 0.5) and 5 (d = 3, easy)
EMBEDDINGS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.5, 0.0], [0.0, 1.2], [0.0, -3.0]])


def _negative_of(triplets: Triplets, anchor: int) -> int:
    rows = (triplets.anchor == anchor).nonzero().flatten()
    assert len(rows) == 1
    return int(triplets.negative[rows[0]])


# --- similarity -------------------------------------------------------------------------------------------------


def test_direction_similarity_identical_opposite_orthogonal() -> None:
    p = turn_north(10.0)
    positions = torch.stack([p, p, -p, east(1.0), torch.stack([torch.zeros(T), torch.arange(T) * 1.0], -1)])
    sim = direction_similarity(positions, torch.ones(5, T, dtype=torch.bool))
    assert sim.shape == (5, 5)
    torch.testing.assert_close(sim[0, 1], torch.tensor(1.0))
    torch.testing.assert_close(sim[0, 2], torch.tensor(-1.0))
    torch.testing.assert_close(sim[3, 4], torch.tensor(0.0))  # east vs north
    torch.testing.assert_close(sim, sim.T)
    assert sim.min() >= -1 and sim.max() <= 1
    # speed-blind: a faster straight line is the same motion
    positions, valid = six()
    sim = direction_similarity(positions, valid)
    torch.testing.assert_close(sim[:3, :3], torch.ones(3, 3))
    assert sim[:3, 3:].max() < sim[3:, 3:].min()


def test_direction_similarity_ignores_invalid_steps_and_falls_back_to_end_points() -> None:
    a, b = east(1.0), east(1.0)
    valid = torch.ones(2, T, dtype=torch.bool)
    valid[1, 5:9] = False
    b[5:9] = torch.tensor([0.0, 50.0])  # garbage where invalid
    sim = direction_similarity(torch.stack([a, b]), valid)
    torch.testing.assert_close(sim[0, 1], torch.tensor(1.0))
    # no common moving step: the first half vs the second half of a line heading north-east
    line = torch.arange(T, dtype=torch.float32)[:, None].expand(T, 2).clone()
    halves = torch.zeros(2, T, dtype=torch.bool)
    halves[0, : T // 2], halves[1, T // 2 :] = True, True
    other = torch.stack([line, torch.stack([line[:, 0], torch.zeros(T)], -1)])
    sim = direction_similarity(other, halves)
    torch.testing.assert_close(sim[0, 1], torch.tensor(math.cos(math.pi / 4)))
    # a trajectory that never moves: 0 to everything
    still = direction_similarity(torch.stack([torch.zeros(T, 2), a]), torch.ones(2, T, dtype=torch.bool))
    assert still[0].abs().max() == 0


def test_fill_invalid_interpolates_and_holds() -> None:
    x = torch.arange(6, dtype=torch.float32)
    positions = torch.stack([x, 2 * x], -1)[None].clone()
    valid = torch.tensor([[False, True, False, False, True, False]])
    positions[~valid] = 99.0
    filled = fill_invalid(positions, valid)[0]
    torch.testing.assert_close(filled[:, 0], torch.tensor([1.0, 1.0, 2.0, 3.0, 4.0, 4.0]))
    torch.testing.assert_close(filled[:, 1], torch.tensor([2.0, 2.0, 4.0, 6.0, 8.0, 8.0]))
    assert fill_invalid(positions, torch.zeros(1, 6, dtype=torch.bool)).abs().max() == 0


def test_spectrum_similarity_offset_invariant_and_gap_filled() -> None:
    p = turn_north(10.0)
    positions = torch.stack([p, p + torch.tensor([30.0, -7.0]), east(1.0), east(3.0)])
    sim = spectrum_similarity(positions, torch.ones(4, T, dtype=torch.bool))
    # the DC bin is dropped: a constant offset changes nothing
    torch.testing.assert_close(sim[0, 1], torch.tensor(1.0))
    torch.testing.assert_close(sim[2, 3], torch.tensor(1.0))  # magnitudes are L2-normalised: speed-blind
    assert sim[0, 2] < 0.95
    assert sim.min() >= 0 and sim.max() <= 1
    # a gap in a straight line is interpolated exactly; zero-filling it would break the line
    valid = torch.ones(2, T, dtype=torch.bool)
    valid[1, 6:10] = False
    gapped = torch.stack([east(1.0), east(1.0)])
    gapped[1, 6:10] = 0.0
    torch.testing.assert_close(spectrum_similarity(gapped, valid)[0, 1], torch.tensor(1.0))
    assert spectrum_similarity(gapped, torch.ones(2, T, dtype=torch.bool))[0, 1] < 0.99


def test_pairwise_similarity_dispatches() -> None:
    positions, valid = six()
    torch.testing.assert_close(pairwise_similarity("cosine", positions, valid), direction_similarity(positions, valid))
    torch.testing.assert_close(
        pairwise_similarity(TrajectorySimilarity.FFT, positions, valid), spectrum_similarity(positions, valid)
    )
    with pytest.raises(ValueError):
        pairwise_similarity("dtw", positions, valid)


# --- mining -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TrajectorySimilarity))
@pytest.mark.parametrize("strategy", list(MiningStrategy))
def test_positives_from_the_same_group_negatives_from_the_other(
    kind: TrajectorySimilarity, strategy: MiningStrategy
) -> None:
    positions, valid = six()
    sim = pairwise_similarity(kind, positions, valid)
    triplets = mine_triplets(sim, EMBEDDINGS, strategy, MARGIN, generator=torch.Generator().manual_seed(0))
    assert triplets.anchor.tolist() == list(range(6))
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    assert (group[triplets.positive] == group[triplets.anchor]).all()
    assert (triplets.positive != triplets.anchor).all()
    assert (group[triplets.negative] != group[triplets.anchor]).all()


def test_hard_and_semi_hard_negatives() -> None:
    sim = direction_similarity(*six())
    hard = mine_triplets(sim, EMBEDDINGS, MiningStrategy.HARD, MARGIN)
    assert _negative_of(hard, 0) == 3  # the closest of 3, 4, 5
    semi = mine_triplets(sim, EMBEDDINGS, "semi_hard", MARGIN)
    assert _negative_of(semi, 0) == 4  # 1 < 1.2 < 1 + 0.5
    # with margin 0.1 no negative lies in (1, 1.1): back to the hard one
    assert _negative_of(mine_triplets(sim, EMBEDDINGS, MiningStrategy.SEMI_HARD, 0.1), 0) == 3
    # with margin 3 the semi-hard band holds 4 and 5: the closest of them
    assert _negative_of(mine_triplets(sim, EMBEDDINGS, MiningStrategy.SEMI_HARD, 3.0), 0) == 4


def test_random_negatives_uniform_over_candidates_and_reproducible() -> None:
    sim = direction_similarity(*six())

    def draw(seed: int) -> Triplets:
        return mine_triplets(
            sim, EMBEDDINGS, MiningStrategy.RANDOM, MARGIN, generator=torch.Generator().manual_seed(seed)
        )

    first, again = draw(7), draw(7)
    assert torch.equal(first.negative, again.negative) and torch.equal(first.positive, again.positive)
    seen = [_negative_of(draw(seed), 0) for seed in range(300)]
    assert set(seen) == {3, 4, 5}
    counts = torch.bincount(torch.tensor(seen), minlength=6)[3:]
    assert counts.min() > 60  # ~100 each; a draw over anything but the three candidates would show
    assert {_negative_of(draw(seed), 3) for seed in range(100)} <= {0, 1, 2}


def test_hand_set_similarity_quantiles() -> None:
    # row 0: 1 is the most similar, 2 in between, 3 and 4 the least similar half
    sim = torch.tensor(
        [
            [1.0, 0.9, 0.5, 0.1, 0.0],
            [0.9, 1.0, 0.5, 0.1, 0.0],
            [0.5, 0.5, 1.0, 0.5, 0.5],
            [0.1, 0.1, 0.5, 1.0, 0.9],
            [0.0, 0.0, 0.5, 0.9, 1.0],
        ]
    )
    embeddings = torch.tensor([[0.0], [5.0], [0.1], [3.0], [2.0]])
    triplets = mine_triplets(sim, embeddings, MiningStrategy.HARD, MARGIN)
    # row 0 quantile 0.5 of [0.9, 0.5, 0.1, 0.0] is 0.3: 2 (d = 0.1) is no candidate, 4 (d = 2) beats 3 (d = 3)
    assert _negative_of(triplets, 0) == 4
    assert int(triplets.positive[triplets.anchor == 0]) == 1
    # row 2 is flat: its positive (0.5, the first) is as similar as every other item, no negative: dropped
    assert 2 not in triplets.anchor.tolist()
    assert triplets.anchor.tolist() == [0, 1, 3, 4]


def test_no_triplets_when_all_alike_or_too_few() -> None:
    embeddings = torch.randn(4, 3)
    assert len(mine_triplets(torch.ones(4, 4), embeddings, MiningStrategy.HARD, MARGIN)) == 0
    assert len(mine_triplets(torch.eye(2), embeddings[:2], MiningStrategy.HARD, MARGIN)) == 0


def test_mining_is_detached() -> None:
    embeddings = EMBEDDINGS.clone().requires_grad_(True)
    triplets = mine_triplets(direction_similarity(*six()), embeddings, MiningStrategy.HARD, MARGIN)
    assert not triplets.negative.requires_grad
    assert embeddings.grad is None


def test_mining_refuses_bad_arguments() -> None:
    sim = direction_similarity(*six())
    with pytest.raises(ValueError):
        mine_triplets(sim, EMBEDDINGS[:5], MiningStrategy.HARD, MARGIN)
    with pytest.raises(ValueError):
        mine_triplets(sim, EMBEDDINGS, MiningStrategy.HARD, -1.0)
    with pytest.raises(ValueError):
        mine_triplets(sim, EMBEDDINGS, MiningStrategy.HARD, MARGIN, positive_quantile=1.5)
    with pytest.raises(ValueError):
        mine_triplets(sim, EMBEDDINGS, "hardest", MARGIN)


# --- loss and schedule ------------------------------------------------------------------------------------------


def test_triplet_loss_hand_computed() -> None:
    embeddings = EMBEDDINGS.clone().requires_grad_(True)
    triplets = Triplets(torch.tensor([0, 0, 0]), torch.tensor([1, 1, 2]), torch.tensor([3, 4, 5]))
    # hinges: 1 - 0.5 + 0.5 = 1, 1 - 1.2 + 0.5 = 0.3, 1 - 3 + 0.5 < 0 -> 0
    loss = triplet_loss(embeddings, triplets, MARGIN)
    torch.testing.assert_close(loss, torch.tensor((1.0 + 0.3 + 0.0) / 3))
    loss.backward()
    assert embeddings.grad is not None and embeddings.grad[0].abs().sum() > 0
    assert embeddings.grad[5].abs().sum() == 0  # an inactive hinge gives no gradient


def test_triplet_loss_without_triplets_is_zero_with_grad() -> None:
    embeddings = torch.randn(4, 3, requires_grad=True)
    none = torch.zeros(0, dtype=torch.long)
    loss = triplet_loss(embeddings, Triplets(none, none, none), MARGIN)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert embeddings.grad is not None and embeddings.grad.abs().sum() == 0


def test_triplet_loss_finite_gradient_for_identical_embeddings() -> None:
    embeddings = torch.zeros(3, 2, requires_grad=True)
    triplet_loss(embeddings, Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])), MARGIN).backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()


def test_mining_schedule_phases() -> None:
    schedule = MiningSchedule()
    assert [schedule.strategy(p) for p in (0.0, 0.29, 0.3, 0.69, 0.7, 1.0)] == [
        MiningStrategy.HARD,
        MiningStrategy.HARD,
        MiningStrategy.SEMI_HARD,
        MiningStrategy.SEMI_HARD,
        MiningStrategy.RANDOM,
        MiningStrategy.RANDOM,
    ]
    assert MiningSchedule(0.0, 0.0).strategy(0.0) is MiningStrategy.RANDOM
    fixed = MiningSchedule(fixed="semi_hard")
    assert {fixed.strategy(p) for p in (0.0, 0.5, 1.0)} == {MiningStrategy.SEMI_HARD}
    for bad in ((0.5, 0.4), (-0.1, 0.5), (0.3, 1.2)):
        with pytest.raises(ValueError):
            MiningSchedule(*bad)
    with pytest.raises(ValueError):
        schedule.strategy(1.5)
