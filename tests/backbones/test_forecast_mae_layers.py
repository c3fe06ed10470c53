"""Forecast-MAE layers: neighborhood attention against a brute-force reference, module trees, shapes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from smartpretrain.backbones.forecast_mae.layers import (
    AgentEmbeddingLayer,
    DropPath,
    LaneEmbeddingLayer,
    Mlp,
    MultimodalDecoder,
    NATLayer,
    NeighborhoodAttention1D,
    TransformerBlock,
    init_weights,
    neighborhood_indices,
)


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _reference_na(na: NeighborhoodAttention1D, x: Tensor) -> Tensor:
    """Neighborhood attention with explicit loops over batch, heads, queries and keys."""
    b, length, c = x.shape
    heads, d, k = na.num_heads, na.head_dim, na.kernel_size
    qkv = na.qkv(x)
    q, key, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    rows = []
    for bi in range(b):
        tokens = []
        for i in range(length):
            if length < k:
                window = list(range(length))
            else:
                start = min(max(i - k // 2, 0), length - k)
                window = list(range(start, start + k))
            head_outs = []
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                logits = torch.stack(
                    [(q[bi, i, sl] * key[bi, j, sl]).sum() * d**-0.5 + na.rpb[h, j - i + k - 1] for j in window]
                )
                weights = logits.softmax(dim=0)
                head_outs.append(sum(weights[n] * v[bi, j, sl] for n, j in enumerate(window)))
            tokens.append(torch.cat(head_outs))
        rows.append(torch.stack(tokens))
    return na.proj(torch.stack(rows))


# ----------------------------------------------------------------------------- neighborhood attention


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("length", [1, 2, 3, 5, 13, 25, 50])
def test_na_matches_brute_force_values_and_gradients(length: int, kernel_size: int) -> None:
    torch.manual_seed(length * 10 + kernel_size)
    na = NeighborhoodAttention1D(8, 2, kernel_size).double()
    with torch.no_grad():
        na.rpb.normal_(std=0.5)  # make the bias matter
        na.qkv.bias.normal_()
    x = torch.randn(2, length, 8, dtype=torch.float64, requires_grad=True)
    out = na(x)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *na.parameters()], grad_out)
    ref = _reference_na(na, x)
    ref_grads = torch.autograd.grad(ref, [x, *na.parameters()], grad_out)
    assert out.shape == (2, length, 8)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, atol=1e-6, rtol=0)


def test_na_window_indices() -> None:
    idx = neighborhood_indices(7, 5)
    assert idx.tolist() == [
        [0, 1, 2, 3, 4],
        [0, 1, 2, 3, 4],
        [0, 1, 2, 3, 4],
        [1, 2, 3, 4, 5],
        [2, 3, 4, 5, 6],
        [2, 3, 4, 5, 6],
        [2, 3, 4, 5, 6],
    ]
    assert neighborhood_indices(3, 5).tolist() == [[0, 1, 2]] * 3


def _changed_outputs(na: NeighborhoodAttention1D, x: Tensor, j: int) -> set[int]:
    y = na(x)
    x2 = x.clone()
    x2[:, j] += 3.0 * torch.randn_like(x2[:, j])
    y2 = na(x2)
    return {i for i in range(x.shape[1]) if not torch.equal(y[:, i], y2[:, i])}


def test_na_window_shifted_inward_at_edges() -> None:
    torch.manual_seed(0)
    length, k = 13, 5
    na = NeighborhoodAttention1D(8, 2, k).eval()
    x = torch.randn(1, length, 8)
    with torch.no_grad():
        for j in range(length):
            starts = [min(max(i - k // 2, 0), length - k) for i in range(length)]
            expected = {i for i in range(length) if starts[i] <= j < starts[i] + k}
            assert _changed_outputs(na, x, j) == expected, j
        # explicit edge cases: token 4 is in query 1's window [0, 5) (not a centred, truncated [-1, 4));
        # token 5 is outside query 0's and 1's windows; token 8 is in query 12's window [8, 13).
        assert {0, 1, 2} <= _changed_outputs(na, x, 4)
        assert not {0, 1, 2} & _changed_outputs(na, x, 5)
        assert {10, 11, 12} <= _changed_outputs(na, x, 8)
        assert not {11, 12} & _changed_outputs(na, x, 7)


def test_na_short_sequence_attends_to_all() -> None:
    torch.manual_seed(1)
    na = NeighborhoodAttention1D(16, 4, 5).eval()
    x = torch.randn(2, 3, 16)
    with torch.no_grad():
        for j in range(3):
            assert _changed_outputs(na, x, j) == {0, 1, 2}
        # L == k: every query's (shifted) window is the whole sequence
        assert _changed_outputs(na, torch.randn(1, 5, 16), 4) == set(range(5))


def test_na_parameters() -> None:
    na = NeighborhoodAttention1D(32, 2, 3)
    shapes = {n: tuple(p.shape) for n, p in na.named_parameters()}
    assert shapes == {
        "qkv.weight": (96, 32),
        "qkv.bias": (96,),
        "rpb": (2, 5),
        "proj.weight": (32, 32),
        "proj.bias": (32,),
    }
    big = NeighborhoodAttention1D(8, 8, 51)
    assert 0.015 < big.rpb.std().item() < 0.025
    assert NeighborhoodAttention1D(8, 2, 3, qkv_bias=False).qkv.bias is None
    with pytest.raises(ValueError):
        NeighborhoodAttention1D(8, 2, 4)
    with pytest.raises(ValueError):
        NeighborhoodAttention1D(10, 4, 3)


# ----------------------------------------------------------------------------- small layers


def test_drop_path() -> None:
    x = torch.randn(64, 5, 3)
    dp = DropPath(0.25)
    dp.eval()
    assert dp(x) is x
    assert DropPath(0.0).train()(x) is x
    dp.train()
    torch.manual_seed(0)
    y = dp(x)
    kept = [torch.allclose(y[b], x[b] / 0.75) for b in range(64)]
    dropped = [torch.equal(y[b], torch.zeros_like(x[b])) for b in range(64)]
    assert all(k != d for k, d in zip(kept, dropped, strict=True))
    assert 0 < sum(dropped) < 64
    assert torch.equal(DropPath(1.0).train()(x), torch.zeros_like(x))
    with pytest.raises(ValueError):
        DropPath(1.5)


def test_mlp_and_nat_layer() -> None:
    mlp = Mlp(16, 48, out_features=8)
    assert {n: tuple(p.shape) for n, p in mlp.named_parameters()} == {
        "fc1.weight": (48, 16),
        "fc1.bias": (48,),
        "fc2.weight": (8, 48),
        "fc2.bias": (8,),
    }
    assert isinstance(mlp.act, nn.GELU)
    assert mlp(torch.randn(2, 16)).shape == (2, 8)
    layer = NATLayer(32, 2, 3, drop_path=0.1)
    assert [n for n, _ in layer.named_children()] == ["norm1", "attn", "drop_path", "norm2", "mlp"]
    assert layer.mlp.fc1.out_features == 96
    layer.eval()
    x = torch.randn(2, 7, 32)
    expected = x + layer.attn(layer.norm1(x))
    expected = expected + layer.mlp(layer.norm2(expected))
    torch.testing.assert_close(layer(x), expected)


def test_init_weights() -> None:
    lin, ln, conv = nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv1d(2, 2, 3)
    with torch.no_grad():
        for p in (*lin.parameters(), *ln.parameters()):
            p.fill_(7.0)
    conv_before = conv.weight.detach().clone()
    for m in (lin, ln, conv):
        init_weights(m)
    assert torch.equal(lin.bias, torch.zeros(4)) and lin.weight.abs().max() <= (6 / 8) ** 0.5
    assert torch.equal(ln.weight, torch.ones(4)) and torch.equal(ln.bias, torch.zeros(4))
    assert torch.equal(conv.weight, conv_before)


# ----------------------------------------------------------------------------- agent embedding


def test_agent_embedding_state_dict() -> None:
    sd = {k: tuple(v.shape) for k, v in AgentEmbeddingLayer().state_dict().items()}
    expected = {
        "embed.proj.weight": (32, 4, 3),
        "embed.proj.bias": (32,),
        "levels.0.blocks.0.attn.rpb": (2, 5),
        "levels.1.blocks.1.attn.rpb": (4, 5),
        "levels.2.blocks.0.attn.rpb": (8, 9),
        "levels.0.downsample.reduction.weight": (64, 32, 3),
        "levels.1.downsample.reduction.weight": (128, 64, 3),
        "levels.0.downsample.norm.weight": (64,),
        "norm0.weight": (32,),
        "norm1.weight": (64,),
        "norm2.weight": (128,),
        "lateral_convs.0.weight": (128, 32, 3),
        "lateral_convs.1.weight": (128, 64, 3),
        "lateral_convs.2.weight": (128, 128, 3),
        "fpn_conv.weight": (128, 128, 3),
        "levels.0.blocks.0.attn.qkv.weight": (96, 32),
        "levels.0.blocks.0.attn.proj.weight": (32, 32),
        "levels.0.blocks.0.mlp.fc1.weight": (96, 32),
        "levels.2.blocks.1.mlp.fc2.weight": (128, 384),
        "levels.0.blocks.1.norm1.weight": (32,),
    }
    for key, shape in expected.items():
        assert sd.get(key) == shape, key
    assert not any(k.startswith("levels.2.downsample") for k in sd)
    assert "levels.0.downsample.reduction.bias" not in sd
    assert not any(k.startswith("levels.0.blocks.2") for k in sd)
    # embed 2, 6 NAT layers x 13, 2 downsamplers x 3, norms 3 x 2, laterals 3 x 2, fpn 2
    assert len(sd) == 2 + 6 * 13 + 2 * 3 + 3 * 2 + 3 * 2 + 2


def test_agent_embedding_drop_path_rates_and_init() -> None:
    model = AgentEmbeddingLayer()
    rates = [model.levels[i].blocks[j].drop_path.p for i in range(3) for j in range(2)]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.2, 6))
    qkv = model.levels[0].blocks[0].attn.qkv
    assert torch.equal(qkv.bias, torch.zeros(96))
    assert qkv.weight.abs().max() <= (6 / (32 + 96)) ** 0.5


def test_parameter_counts() -> None:
    assert _num_params(AgentEmbeddingLayer()) == 603_308
    assert _num_params(AgentEmbeddingLayer(in_chans=3)) == 603_212
    assert _num_params(LaneEmbeddingLayer()) == 198_528
    assert _num_params(TransformerBlock()) == 198_272
    assert _num_params(MultimodalDecoder()) == 246_521


@pytest.mark.parametrize("steps", [11, 20, 50, 60])
def test_agent_embedding_shapes_and_backward(steps: int) -> None:
    torch.manual_seed(steps)
    model = AgentEmbeddingLayer()
    x = torch.randn(3, 4, steps, requires_grad=True)
    out = model(x)
    assert out.shape == (3, 128)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_agent_embedding_sequence_lengths() -> None:
    model = AgentEmbeddingLayer().eval()
    lengths = []
    for level in model.levels:
        level.register_forward_hook(lambda _m, _i, out: lengths.append((out[0].shape[1], out[1].shape[1])))
    with torch.no_grad():
        model(torch.randn(1, 4, 50))
    assert lengths == [(50, 25), (25, 13), (13, 13)]


def test_agent_embedding_uses_last_step_and_top_down() -> None:
    """The output depends on the FPN at the last step: the last step's input matters; pyramid levels matter."""
    torch.manual_seed(0)
    model = AgentEmbeddingLayer().eval()
    x = torch.randn(2, 4, 20)
    with torch.no_grad():
        y = model(x)
        x2 = x.clone()
        x2[:, :, -1] += 1.0
        assert not torch.allclose(model(x2), y)
        model.lateral_convs[2].bias.add_(1.0)  # reaches the output only through the top-down path
        assert not torch.allclose(model(x), y)


def test_agent_embedding_matches_explicit_composition() -> None:
    """Features normed before each downsampling, laterals, top-down linear upsampling, fpn_conv, last step."""
    torch.manual_seed(0)
    model = AgentEmbeddingLayer().eval()
    x = torch.randn(2, 4, 11)
    with torch.no_grad():
        h = model.embed.proj(x).transpose(1, 2)
        feats = []
        for i, level in enumerate(model.levels):
            for block in level.blocks:
                h = block(h)
            feats.append(getattr(model, f"norm{i}")(h))
            if i < 2:
                h = level.downsample.norm(level.downsample.reduction(h.transpose(1, 2)).transpose(1, 2))
        assert [f.shape[1] for f in feats] == [11, 6, 3]
        lat = [conv(f.transpose(1, 2)) for conv, f in zip(model.lateral_convs, feats, strict=True)]
        up2 = torch.nn.functional.interpolate(lat[2], size=6, mode="linear", align_corners=False)
        lat1 = lat[1] + up2
        lat0 = lat[0] + torch.nn.functional.interpolate(lat1, size=11, mode="linear", align_corners=False)
        expected = model.fpn_conv(lat0)[..., -1]
        torch.testing.assert_close(model(x), expected)


def test_agent_embedding_eval_deterministic_train_stochastic() -> None:
    torch.manual_seed(0)
    model = AgentEmbeddingLayer(drop_path_rate=0.5)
    x = torch.randn(16, 4, 50)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
        assert torch.equal(a, b)
        model.train()
        torch.manual_seed(1)
        c = model(x)
        torch.manual_seed(2)
        d = model(x)
        torch.manual_seed(1)
        e = model(x)
    assert not torch.allclose(c, d)
    assert torch.equal(c, e)
    assert not torch.allclose(a, c)


# ----------------------------------------------------------------------------- lane, transformer, decoder


def test_lane_embedding() -> None:
    torch.manual_seed(0)
    model = LaneEmbeddingLayer()
    assert {n: tuple(p.shape) for n, p in model.named_parameters()}["second_conv.0.weight"] == (256, 512, 1)
    x = torch.randn(5, 20, 3, requires_grad=True)
    out = model(x)
    assert out.shape == (5, 128)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    model.eval()
    with torch.no_grad():
        # permutation invariant over points
        torch.testing.assert_close(model(x[:, torch.randperm(20)]), model(x))
        # reference composition (global feature first)
        f = model.first_conv(x.transpose(1, 2))
        g = f.max(dim=-1, keepdim=True).values
        ref = model.second_conv(torch.cat([g.expand_as(f), f], dim=1)).max(dim=-1).values
        torch.testing.assert_close(model(x), ref)


def test_transformer_block() -> None:
    torch.manual_seed(0)
    block = TransformerBlock()
    names = {n for n, _ in block.named_parameters()}
    assert "attn.in_proj_bias" in names and "attn.bias_k" not in names
    assert "attn.bias_k" in {n for n, _ in TransformerBlock(qkv_bias=True).named_parameters()}
    block.eval()
    x = torch.randn(2, 6, 128)
    mask = torch.tensor([[False, False, False, False, True, True], [False, False, False, False, False, False]])
    with torch.no_grad():
        y = block(x, key_padding_mask=mask)
        x2 = x.clone()
        x2[0, 4:] = torch.randn(2, 128) * 5
        y2 = block(x2, key_padding_mask=mask)
        torch.testing.assert_close(y2[0, :4], y[0, :4])
        torch.testing.assert_close(y2[1], y[1])
        assert not torch.allclose(block(x2)[0, :4], block(x)[0, :4])  # without the mask they do matter
    out = block.train()(x.requires_grad_())
    assert out.shape == (2, 6, 128)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_multimodal_decoder() -> None:
    dec = MultimodalDecoder()
    loc, pi = dec(torch.randn(4, 128))
    assert loc.shape == (4, 6, 60, 2) and pi.shape == (4, 6)
    assert [n for n, _ in dec.named_parameters()] == [
        "multimodal_proj.weight",
        "multimodal_proj.bias",
        "loc.0.weight",
        "loc.0.bias",
        "loc.2.weight",
        "loc.2.bias",
        "loc.4.weight",
        "loc.4.bias",
        "pi.0.weight",
        "pi.0.bias",
        "pi.2.weight",
        "pi.2.bias",
        "pi.4.weight",
        "pi.4.bias",
    ]
    loc, pi = MultimodalDecoder(future_steps=80).eval()(torch.randn(1, 128))
    assert loc.shape == (1, 6, 80, 2) and pi.shape == (1, 6)
