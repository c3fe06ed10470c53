"""The trajectory encoder: shapes, masking of invalid steps, empty rows, and that triplet training learns."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from smartpretrain.embeddings.mining import MiningStrategy, mine_triplets, triplet_loss
from smartpretrain.embeddings.similarity import direction_similarity
from smartpretrain.embeddings.trajectory_encoder import TrajectoryEncoder, TrajectoryEncoderConfig

T = 12


def small(**overrides: object) -> TrajectoryEncoder:
    torch.manual_seed(0)
    values = {"num_steps": T, "embedding_dim": 8, "hidden_dim": 32, "num_heads": 2, "num_layers": 1}
    values.update(overrides)
    return TrajectoryEncoder(TrajectoryEncoderConfig(**values))  # type: ignore[arg-type]


def random_batch(b: int = 5, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    positions = torch.cumsum(torch.rand(b, T, 2, generator=g), dim=1)
    valid = torch.rand(b, T, generator=g) > 0.3
    valid[:, 0] = True
    return positions, valid


def test_output_shape_and_unit_norm() -> None:
    encoder = small().eval()
    positions, valid = random_batch()
    out = encoder(positions, valid)
    assert out.shape == (5, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    raw = small(normalize=False).eval()(positions, valid)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(5))


def test_invalid_steps_do_not_affect_the_output() -> None:
    encoder = small().eval()
    positions, valid = random_batch()
    with torch.no_grad():
        before = encoder(positions, valid)
        changed = positions.clone()
        changed[~valid] = torch.randn(int((~valid).sum()), 2) * 100.0
        after = encoder(changed, valid)
        changed[~valid] = math.inf  # not even an infinity leaks
        infinite = encoder(changed, valid)
    assert torch.equal(before, after)
    assert torch.equal(before, infinite)
    # whereas a valid step's position does matter
    moved = positions.clone()
    moved[0, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(encoder(moved, valid)[0], before[0])


def test_fully_invalid_row_is_finite_in_train_and_eval() -> None:
    encoder = small()
    positions, valid = random_batch()
    valid[2] = False
    out = encoder(positions, valid)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)
    with torch.no_grad():
        assert torch.isfinite(encoder.eval()(positions, valid)).all()
        # the empty row's output does not depend on what its (invalid) positions hold
        other = positions.clone()
        other[2] = 7.0
        torch.testing.assert_close(encoder(other, valid)[2], encoder(positions, valid)[2])


def test_wrong_length_refused() -> None:
    encoder = small()
    with pytest.raises(ValueError, match=rf"T=13.*num_steps={T}"):
        encoder(torch.zeros(2, 13, 2), torch.ones(2, 13, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid"):
        encoder(torch.zeros(2, T, 2), torch.ones(2, T - 1, dtype=torch.bool))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_steps": 0},
        {"hidden_dim": 30, "num_heads": 4},
        {"dropout": 1.0},
        {"embedding_dim": 0},
        {"position_scale": 0},
    ],
)
def test_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrajectoryEncoderConfig(**kwargs)  # type: ignore[arg-type]


def two_groups(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """n trajectories going straight ahead and n turning left by 90°, at various speeds, with 5 cm noise."""
    g = torch.Generator().manual_seed(seed)
    speed = 0.5 + torch.rand(2 * n, 1, generator=g)  # m per step
    s = speed * torch.arange(T, dtype=torch.float32)  # travelled distance
    straight = torch.stack([s[:n], torch.zeros_like(s[:n])], dim=-1)
    radius = (s[n:, -1:] / (math.pi / 2)).clamp_min(1e-3)
    theta = s[n:] / radius
    turning = torch.stack([radius * torch.sin(theta), radius * (1 - torch.cos(theta))], dim=-1)
    positions = torch.cat([straight, turning]) + 0.05 * torch.randn(2 * n, T, 2, generator=g)
    positions[:, 0] = 0.0
    return positions, torch.ones(2 * n, T, dtype=torch.bool)


def test_triplet_training_reduces_the_loss() -> None:
    margin = 0.5
    encoder = small(dropout=0.0)
    positions, valid = two_groups(12, seed=1)
    similarity = direction_similarity(positions, valid)
    # random negatives depend on the similarity only: a fixed set of triplets to judge by
    held = mine_triplets(
        similarity, torch.zeros(24, 1), MiningStrategy.RANDOM, margin, generator=torch.Generator().manual_seed(0)
    )
    assert len(held) == 24

    def held_loss() -> float:
        with torch.no_grad():
            return triplet_loss(encoder(positions, valid), held, margin).item()

    before = held_loss()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    for _ in range(30):
        embeddings = encoder(positions, valid)
        triplets = mine_triplets(similarity, embeddings, MiningStrategy.HARD, margin)
        loss = triplet_loss(embeddings, triplets, margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_loss()
    assert before > 0.1
    assert after < 0.5 * before
