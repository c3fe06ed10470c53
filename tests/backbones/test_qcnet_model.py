"""QCNet: official checkpoint layout, forward/backward, frames, equivariance, graph definitions, loss, overfitting."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch

from smartpretrain.backbones.graph import wrap_angle
from smartpretrain.backbones.qcnet import QCNet
from smartpretrain.backbones.qcnet.checkpoint_spec import official_state_dict_spec
from smartpretrain.backbones.qcnet.layers import AttentionLayer, FourierEmbedding, MLPLayer
from smartpretrain.backbones.qcnet.loss import best_mode, laplace_nll, masked_step_mean, mixture_nll, qcnet_loss
from tests.backbones.qcnet_inputs import make_batch, make_scene, transform_scene

SMALL = dict(hidden_dim=32, num_heads=2, head_dim=16, num_freq_bands=16, num_agent_layers=1, num_dec_layers=1)


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops on a shared CPU: one thread avoids OpenMP contention (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# official state_dict layout


@pytest.mark.parametrize(
    ("output_head", "num_keys", "num_elements", "num_params"),
    [(False, 949, 7_662_465, 7_660_673), (True, 979, 7_783_649, 7_781_857)],
)
def test_official_state_dict_loads_strict(output_head, num_keys, num_elements, num_params):
    spec = official_state_dict_spec(output_head=output_head)
    assert len(spec) == num_keys
    assert sum(math.prod(shape) for shape in spec.values()) == num_elements

    torch.manual_seed(0)
    model = QCNet(output_head=output_head)
    assert sum(p.numel() for p in model.parameters()) == num_params
    assert not list(model.buffers())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == spec

    # a "checkpoint" with random values; tied norms of non-bipartite layers hold equal values, as in a real one
    state = {key: torch.randn(shape) for key, shape in spec.items()}
    for key in spec:
        if key.endswith(("attn_prenorm_x_dst.weight", "attn_prenorm_x_dst.bias")):
            layer = model.get_submodule(key.rsplit(".", 2)[0])
            if not layer.bipartite:
                state[key] = state[key.replace("_x_dst.", "_x_src.")]
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    tied = [name for name, m in model.named_modules() if isinstance(m, AttentionLayer) and not m.bipartite]
    assert len(tied) == 7
    # the SSL checkpoint's decoder subset (propose stack) is named like ours
    assert "decoder.m2m_propose_attn_layer.to_q.weight" in spec and "decoder.mode_emb.weight" in spec


def test_initialisation():
    torch.manual_seed(0)
    model = QCNet(**SMALL)
    dec = model.decoder
    assert torch.count_nonzero(dec.traj_emb_h0) == 0
    assert abs(float(dec.mode_emb.weight.detach().std()) - 0.02) < 0.01
    lin = dec.to_pi.mlp[0]
    bound = math.sqrt(6.0 / (lin.in_features + lin.out_features))
    assert float(lin.weight.detach().abs().max()) <= bound and torch.count_nonzero(lin.bias) == 0
    norm = dec.to_pi.mlp[1]
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    gru = dec.traj_emb
    d = gru.hidden_size
    for block in gru.weight_hh_l0.detach().chunk(3):
        assert torch.allclose(block @ block.T, torch.eye(d), atol=1e-4)  # orthogonal per gate
    assert torch.count_nonzero(gru.bias_ih_l0) == 0 and torch.count_nonzero(gru.bias_hh_l0) == 0
    freqs = model.encoder.agent_encoder.x_a_emb.freqs.weight
    assert abs(float(freqs.detach().std()) - 0.02) < 0.01


# ---------------------------------------------------------------------------------------------------------------
# forward / backward


def _check_forecast(model: QCNet, data, forecast, num_agents: int):
    k, f = model.num_modes, model.num_future_steps
    assert forecast.loc.shape == (num_agents, k, f, 2)
    assert forecast.pi.shape == (num_agents, k)
    for key in ("loc_propose_pos", "scale_propose_pos", "loc_refine_pos", "scale_refine_pos"):
        assert forecast.extras[key].shape == (num_agents, k, f, 2)
        assert torch.isfinite(forecast.extras[key]).all()
    assert torch.equal(forecast.loc, forecast.extras["loc_refine_pos"])
    assert (forecast.extras["scale_propose_pos"] > 0.1).all() and (forecast.extras["scale_refine_pos"] > 0.1).all()
    # the proposal scale grows with the horizon
    assert (forecast.extras["scale_propose_pos"].diff(dim=2) > 0).all()


@pytest.mark.parametrize("with_map", [[True, True], [False]])
def test_forward_backward_default_model(with_map):
    torch.manual_seed(0)
    model = QCNet()
    data = make_batch(len(with_map), seed=3, with_map=with_map) if len(with_map) > 1 else make_scene(with_map=False)
    num_agents = data["agent"].num_nodes
    enc = model.encode(data)
    assert enc["x_a"].shape == (num_agents, 50, 128)
    assert enc["x_pl"].shape == (data["map_polygon"].num_nodes, 128)
    forecast = model.forecast(data, enc)
    _check_forecast(model, data, forecast, num_agents)
    losses = model.loss(data, forecast)
    assert set(losses) == {"loss", "reg_loss_propose", "reg_loss_refine", "cls_loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())

    def reached(prefix: str) -> bool:
        return any(float(g.abs().sum()) > 0 for name, g in grads.items() if name.startswith(prefix))

    for prefix in ("encoder.agent_encoder.t_attn_layers.1", "encoder.agent_encoder.x_a_emb", "decoder.y_emb"):
        assert reached(prefix), prefix
    if any(with_map):
        assert data["map_polygon"].num_nodes > 0
        for prefix in ("encoder.map_encoder.pt2pl_layers", "encoder.agent_encoder.pl2a_attn_layers"):
            assert reached(prefix), prefix
    else:
        assert enc["x_pl"].shape == (0, 128)


def test_mixed_batch_and_output_head():
    torch.manual_seed(0)
    model = QCNet(output_head=True, **SMALL)
    data = make_batch(3, seed=5, with_map=[True, False, True])
    forecast = model(data)
    _check_forecast(model, data, forecast, data["agent"].num_nodes)
    for key in ("loc_propose_head", "conc_propose_head", "loc_refine_head", "conc_refine_head"):
        assert forecast.extras[key].shape == (data["agent"].num_nodes, 6, 60, 1)
    assert (forecast.extras["conc_propose_head"] > 0).all()
    losses = model.loss(data, forecast)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert float(model.decoder.to_loc_refine_head.mlp[3].weight.grad.abs().sum()) > 0


def test_input_dim_3_variant():
    """input_dim = 3: point height, polygon height and relative z enter the map encoder (fact sheet sizes)."""
    model = QCNet(input_dim=3, **SMALL)
    enc = model.encoder.map_encoder
    sizes = {name: getattr(enc, name).freqs.weight.size(0) for name in ("x_pt_emb", "x_pl_emb", "r_pt2pl_emb")}
    assert sizes == {"x_pt_emb": 2, "x_pl_emb": 1, "r_pt2pl_emb": 4}
    assert enc.r_pl2pl_emb.freqs.weight.size(0) == 4
    data = make_batch(2, seed=4, with_map=[True, False])
    data["map_polygon"].height = torch.rand(data["map_polygon"].num_nodes)
    forecast = model(data)
    assert torch.isfinite(model.loss(data, forecast)["loss"])


def test_scenes_in_a_batch_are_independent():
    torch.manual_seed(0)
    model = QCNet(**SMALL).eval()
    scenes = [make_scene(seed=s, num_agents=5 + s, num_polygons=6 + s) for s in range(3)]
    with torch.no_grad():
        batched = model(Batch.from_data_list(scenes))
        single = [model(s) for s in scenes]
    assert torch.allclose(batched.loc, torch.cat([s.loc for s in single]), atol=1e-4)
    assert torch.allclose(batched.pi, torch.cat([s.pi for s in single]), atol=1e-4)


def test_backbone_interface():
    model = QCNet(**SMALL, ssl_query="encoder")
    data = make_batch(2, seed=1)
    enc = model.encode(data)
    emb = model.agent_embeddings(data, enc)
    a = data["agent"].num_nodes
    assert emb.embeddings.shape == (a, 1, 32) and model.embedding_dim == 32
    assert torch.equal(emb.embeddings[:, 0], enc["x_a"][:, -1])
    assert torch.equal(emb.scene_index, data["agent"].batch)
    assert torch.equal(emb.agent_index, data["agent"].agent_index)

    targets = model.eval_targets(data)
    assert torch.equal(targets.target, data["agent"].target[..., :2])
    assert torch.equal(targets.valid, data["agent"].predict_mask[:, 50:])
    assert torch.equal(targets.role, data["agent"].category)
    assert targets.dataset == ["av2", "av2"] and torch.equal(targets.scene_index, data["agent"].batch)
    single = make_scene()
    t1 = model.eval_targets(single)
    assert t1.dataset == ["av2"] and torch.equal(t1.scene_index, torch.zeros(single["agent"].num_nodes).long())

    # the ground truth mapped back to the scene frame is the observed future
    scene_xy = model.to_scene_frame(data, targets.target.unsqueeze(1))[:, 0]
    pos = data["agent"].position[:, 50:, :2]
    assert torch.allclose(scene_xy[targets.valid], pos[targets.valid], atol=1e-4)


def test_make_adapter():
    pytest.importorskip("smartpretrain.backbones.qcnet.adapter")
    model = QCNet(num_historical_steps=10, num_future_steps=9, pl2pl_radius=80.0, num_t2m_steps=10, **SMALL)
    adapter = model.make_adapter()
    assert adapter.num_historical_steps == 10 and adapter.num_future_steps == 9
    from tests.helpers import make_tiny_scene

    batch = adapter.collate([adapter(make_tiny_scene(f"s{i}", with_map=i % 2 == 0)) for i in range(3)])
    forecast = model(batch)
    assert forecast.loc.shape == (batch["agent"].num_nodes, 6, 9, 2)
    assert torch.isfinite(model.loss(batch, forecast)["loss"])


# ---------------------------------------------------------------------------------------------------------------
# equivariance and graph definitions


def test_rotation_translation_invariance():
    torch.manual_seed(0)
    model = QCNet().eval()
    data = make_scene(num_agents=10, num_polygons=20, seed=2)
    moved = transform_scene(data, angle=2.1, shift=(37.0, -81.0))
    with torch.no_grad():
        a, b = model(data), model(moved)
    assert torch.allclose(a.loc, b.loc, atol=1e-4)
    assert torch.allclose(a.pi, b.pi, atol=1e-4)
    # and the scene-frame outputs move with the scene
    rot = torch.tensor([[math.cos(2.1), -math.sin(2.1)], [math.sin(2.1), math.cos(2.1)]])
    scene_a = model.to_scene_frame(data, a.loc) @ rot.T + torch.tensor([37.0, -81.0])
    pm = data["agent"].predict_mask.any(-1)
    assert torch.allclose(scene_a[pm], model.to_scene_frame(moved, b.loc)[pm], atol=1e-3)


def _edges(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.t().tolist()))


def test_graph_definitions():
    """Every edge set equals its definition, checked by brute force (loops are fine in a test)."""
    model = QCNet(time_span=4, num_t2m_steps=12, pl2a_radius=30.0, a2a_radius=40.0, pl2m_radius=60.0, **SMALL)
    data = make_batch(2, seed=11)
    agent = data["agent"]
    agent.predict_mask[[1, 5]] = False  # two agents the decoder does not predict: no edge may reach their modes
    h, k = 50, 6
    pos, head, valid = agent.position[:, :h, :2], agent.heading[:, :h], agent.valid_mask[:, :h]
    batch_a, batch_pl = agent.batch, data["map_polygon"].batch
    pos_pl = data["map_polygon"].position[:, :2]
    num_a, num_pl = pos.size(0), pos_pl.size(0)
    predicted = agent.predict_mask.any(-1)

    g = model.encoder.agent_encoder.build_graphs(data)
    ref = {
        (a * h + s, a * h + t)
        for a in range(num_a)
        for s in range(h)
        for t in range(h)
        if 1 <= t - s <= 4 and valid[a, s] and valid[a, t]
    }
    assert _edges(g["edge_index_t"]) == ref
    src, dst = g["edge_index_t"]
    assert torch.equal(g["r_t"][:, 3], (src - dst).float())
    ref = set()
    for t in range(h):
        for a in range(num_a):
            for p in range(num_pl):
                close = float((pos[a, t] - pos_pl[p]).norm()) <= 30.0
                if valid[a, t] and batch_a[a] == batch_pl[p] and close:
                    ref.add((t * num_pl + p, t * num_a + a))
    assert _edges(g["edge_index_pl2a"]) == ref
    ref = set()
    for t in range(h):
        for i in range(num_a):
            for j in range(num_a):
                close = float((pos[i, t] - pos[j, t]).norm()) <= 40.0
                if i != j and valid[i, t] and valid[j, t] and batch_a[i] == batch_a[j] and close:
                    ref.add((t * num_a + j, t * num_a + i))
    assert _edges(g["edge_index_a2a"]) == ref

    g = model.decoder.build_graphs(data)
    ref = {(a * h + s, a) for a in range(num_a) for s in range(h - 12, h) if valid[a, s] and predicted[a]}
    assert set(zip(g["t2m_src"].tolist(), g["t2m_agent"].tolist(), strict=True)) == ref
    pos_m, head_m = pos[:, -1], head[:, -1]
    ref = {
        (p, a)
        for p in range(num_pl)
        for a in range(num_a)
        if predicted[a] and batch_a[a] == batch_pl[p] and float((pos_m[a] - pos_pl[p]).norm()) <= 60.0
    }
    assert _edges(g["pl2m"]) == ref
    ref = {
        (j, i)
        for i in range(num_a)
        for j in range(num_a)
        if i != j and batch_a[i] == batch_a[j] and valid[j, h - 1] and predicted[i]
        if float((pos_m[i] - pos_m[j]).norm()) <= 150.0
    }
    assert _edges(g["a2m"]) == ref
    assert _edges(g["m2m"]) == {
        (a * k + x, a * k + y) for a in range(num_a) if predicted[a] for x in range(k) for y in range(k)
    }
    assert not predicted[[1, 5]].any() and predicted.sum() > 2
    # edge features: distance, bearing in the target's frame, relative heading
    j, i = g["a2m"]
    rel = pos_m[j] - pos_m[i]
    assert torch.allclose(g["r_a2m"][:, 0], rel.norm(dim=-1), atol=1e-5)
    bearing = wrap_angle(torch.atan2(rel[:, 1], rel[:, 0]) - head_m[i])
    assert torch.allclose(torch.cos(g["r_a2m"][:, 1] - bearing), torch.ones(len(i)), atol=1e-5)
    assert torch.allclose(g["r_a2m"][:, 2], wrap_angle(head_m[j] - head_m[i]), atol=1e-5)

    g = model.encoder.map_encoder.build_graphs(data)
    topo = data["map_polygon", "to", "map_polygon"]
    topo_type = {e: int(t) for e, t in zip(map(tuple, topo.edge_index.t().tolist()), topo.type.tolist(), strict=True)}
    ref = {
        (j, i)
        for i in range(num_pl)
        for j in range(num_pl)
        if i != j and batch_pl[i] == batch_pl[j] and float((pos_pl[i] - pos_pl[j]).norm()) <= 150.0
    } | set(topo_type)
    assert _edges(g["edge_index_pl2pl"]) == ref
    for e, t in zip(map(tuple, g["edge_index_pl2pl"].t().tolist()), g["type_pl2pl"].tolist(), strict=True):
        assert t == topo_type.get(e, 0)


# ---------------------------------------------------------------------------------------------------------------
# layers


def test_layers_shapes_and_fourier_formula():
    torch.manual_seed(0)
    fe = FourierEmbedding(2, 8, 3)
    x = torch.randn(5, 2)
    y = fe(x, [torch.ones(5, 8)])
    assert y.shape == (5, 8)
    # the formula of the docstring, by hand
    feats = []
    for i in range(2):
        phase = 2 * math.pi * x[:, i : i + 1] * fe.freqs.weight[i]
        feats.append(torch.cat([phase.cos(), phase.sin(), x[:, i : i + 1]], dim=-1))
    h = fe.mlps[0](feats[0]) + fe.mlps[1](feats[1]) + 1.0
    assert torch.allclose(y, fe.to_out(h), atol=1e-6)
    assert FourierEmbedding(0, 8, 3)(None, [torch.ones(4, 8)]).shape == (4, 8)
    assert MLPLayer(8, 16, 3)(torch.randn(7, 8)).shape == (7, 3)


def test_attention_layer_matches_dense_attention():
    torch.manual_seed(0)
    layer = AttentionLayer(16, num_heads=2, head_dim=4, dropout=0.0, bipartite=True, has_pos_emb=True).eval()
    x_src, x_dst = torch.randn(4, 16), torch.randn(3, 16)
    edge_index = torch.tensor([[0, 1, 2, 3, 0], [0, 0, 1, 1, 2]])
    r = torch.randn(5, 16)
    out = layer((x_src, x_dst), r, edge_index)
    # dense reference of the docstring formula
    xs, xd, rn = layer.attn_prenorm_x_src(x_src), layer.attn_prenorm_x_dst(x_dst), layer.attn_prenorm_r(r)
    q = layer.to_q(xd).view(-1, 2, 4)
    k = (layer.to_k(xs)[edge_index[0]] + layer.to_k_r(rn)).view(-1, 2, 4)
    v = (layer.to_v(xs)[edge_index[0]] + layer.to_v_r(rn)).view(-1, 2, 4)
    agg = torch.zeros(3, 2, 4)
    for i in range(3):
        e = (edge_index[1] == i).nonzero().flatten()
        att = torch.softmax((q[i] * k[e]).sum(-1) / 2.0, dim=0)  # [edges, heads]
        agg[i] = (att.unsqueeze(-1) * v[e]).sum(0)
    agg = agg.view(3, 8)
    g = torch.sigmoid(layer.to_g(torch.cat([agg, xd], -1)))
    o = layer.to_out(agg + g * (layer.to_s(xd) - agg))
    ref = x_dst + layer.attn_postnorm(o)
    ref = ref + layer.ff_postnorm(layer.ff_mlp(layer.ff_prenorm(ref)))
    assert torch.allclose(out, ref, atol=1e-5)
    # no incoming edge: the attention output is the gated self term only
    out2 = layer((x_src, x_dst), r[:0], edge_index[:, :0])
    assert torch.isfinite(out2).all() and out2.shape == (3, 16)


# ---------------------------------------------------------------------------------------------------------------
# loss


def test_laplace_nll_by_hand():
    nll = laplace_nll(torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([1.0]))
    assert torch.allclose(nll, torch.tensor([math.log(4.0) + 0.5]))
    # scale clamped at 1e-6 in value, gradient still flows to it
    scale = torch.tensor([0.0], requires_grad=True)
    nll = laplace_nll(torch.tensor([0.0]), scale, torch.tensor([2e-6]))
    assert torch.allclose(nll, torch.tensor([math.log(2e-6) + 2.0]))
    nll.sum().backward()
    # d/db (log 2b + |y - mu| / b) at b = 1e-6, |y - mu| = 2e-6: 1/b - 2e-6/b^2 = -1e6, passed through the clamp
    assert scale.grad is not None and torch.allclose(scale.grad, torch.tensor([-1e6]), rtol=1e-3)


def test_masked_step_mean():
    loss = torch.tensor([[1.0, 2.0, 5.0], [3.0, 4.0, float("nan")]])
    mask = torch.tensor([[True, True, False], [False, True, False]])
    # step 0: 1/1, step 1: 6/2, step 2: no valid agent -> 0; mean over steps
    assert torch.allclose(masked_step_mean(loss, mask), torch.tensor((1.0 + 3.0 + 0.0) / 3))


def _outputs(num_agents=2, k=3, f=4):
    gt = torch.randn(num_agents, f, 4)
    prop = gt[:, None, :, :2].repeat(1, k, 1, 1) + 5.0
    prop[:, 1] = gt[..., :2] + 0.1  # mode 1 is the best proposal
    refine = gt[:, None, :, :2].repeat(1, k, 1, 1) + 5.0
    refine[:, 0] = gt[..., :2]  # mode 0 is the best refinement
    out = {
        "loc_propose_pos": prop.requires_grad_(),
        "scale_propose_pos": torch.ones(num_agents, k, f, 2, requires_grad=True),
        "loc_refine_pos": refine.requires_grad_(),
        "scale_refine_pos": torch.full((num_agents, k, f, 2), 0.5, requires_grad=True),
    }
    return out, gt


def test_best_mode_is_chosen_on_the_proposal():
    out, gt = _outputs()
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert best_mode(out["loc_propose_pos"], gt, mask).tolist() == [1, 1]
    pi = torch.zeros(2, 3, requires_grad=True)
    losses = qcnet_loss(out, pi, gt, mask, mask[:, -1])
    # refinement loss of mode 1 (5 m off in x and y, b = 0.5), not of the perfect mode 0
    expected = 2 * (math.log(1.0) + 5.0 / 0.5)
    assert torch.allclose(losses["reg_loss_refine"], torch.tensor(expected), atol=1e-5)
    expected_prop = 2 * (math.log(2.0) + 0.1)
    assert torch.allclose(losses["reg_loss_propose"], torch.tensor(expected_prop), atol=1e-5)
    # masking a step out of the proposal sum can change the winner
    out["loc_propose_pos"].data[:, 2, 0] = gt[:, 0, :2] + 0.0
    out["loc_propose_pos"].data[:, 2, 1:] = gt[:, 1:, :2] + 0.1
    assert best_mode(out["loc_propose_pos"], gt, mask).tolist() == [2, 2]
    mask[:, 0] = False
    assert best_mode(out["loc_propose_pos"], gt, mask).tolist() == [1, 1]


def test_cls_loss_reaches_only_pi():
    out, gt = _outputs()
    mask = torch.ones(2, 4, dtype=torch.bool)
    pi = torch.randn(2, 3, requires_grad=True)
    losses = qcnet_loss(out, pi, gt, mask, mask[:, -1])
    losses["cls_loss"].backward()
    assert pi.grad is not None and float(pi.grad.abs().sum()) > 0
    assert all(v.grad is None for v in out.values())
    # the mixture NLL by hand for agent 0
    nll = laplace_nll(out["loc_refine_pos"][0, :, -1], out["scale_refine_pos"][0, :, -1], gt[0, -1, :2]).sum(-1)
    ref = -torch.log((torch.softmax(pi[0], -1) * torch.exp(-nll)).sum())
    loc, scale = out["loc_refine_pos"][:1, :, -1], out["scale_refine_pos"][:1, :, -1]
    one = mixture_nll(pi[:1], loc, scale, gt[:1, -1, :2], torch.tensor([True]))
    assert torch.allclose(one, ref, atol=1e-5)
    # agents outside cls_mask do not count
    masked = qcnet_loss(out, pi, gt, mask, torch.tensor([True, False]))["cls_loss"]
    assert torch.allclose(masked, one, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# training


def test_tiny_model_overfits_one_scene():
    torch.manual_seed(0)
    model = QCNet(dropout=0.0, **SMALL)
    data = make_scene(num_agents=6, num_polygons=8, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    history = []
    for _ in range(50):
        losses = model.loss(data, model(data))
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], min(history[-10:], key=lambda h: h["loss"])
    assert last["loss"] < 0.3 * first["loss"], (first, last)
    assert last["reg_loss_propose"] < 0.8 * first["reg_loss_propose"], (first, last)


def test_grouped_attention_equals_attention_per_member():
    """``attend`` on groups [N, G, D] = the plain layer on G tiled copies of the edges; ``attend_within_groups`` =
    the plain layer on all (member, member) edges of each group; a group without edges gets the edge-less update."""
    torch.manual_seed(0)
    layer = AttentionLayer(16, num_heads=2, head_dim=4, dropout=0.0, bipartite=True, has_pos_emb=True).eval()
    x_src, x_dst, g = torch.randn(5, 16), torch.randn(4, 4, 16, requires_grad=True), 4  # group 3: no edge
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0], [0, 0, 1, 1, 1, 2]])
    r = torch.randn(6, 16)
    grouped = layer.attend(x_dst, *layer.source_messages(x_src, r, edge_index[0]), edge_index[1])
    # tiled: member k of group i is node i*G + k and receives every edge of group i
    members = torch.arange(g)
    tiled_dst = (edge_index[1].unsqueeze(1) * g + members).reshape(-1)
    tiled = layer(
        (x_src, x_dst.reshape(-1, 16)),
        r.repeat_interleave(g, 0),
        torch.stack([edge_index[0].repeat_interleave(g), tiled_dst]),
    )
    assert torch.allclose(grouped.reshape(-1, 16), tiled, atol=1e-5)
    grouped.sum().backward()  # the edge-less group's padded scores stay finite: no NaN in the gradients
    assert torch.isfinite(x_dst.grad).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())

    m2m = AttentionLayer(16, num_heads=2, head_dim=4, dropout=0.0, bipartite=False, has_pos_emb=False).eval()
    x = torch.randn(3, g, 16)
    active = torch.tensor([True, False, True])
    dense = m2m.attend_within_groups(x, active)
    pairs = [(i * g + a, i * g + b) for i in (0, 2) for a in range(g) for b in range(g)]
    sparse = m2m(x.reshape(-1, 16), None, torch.tensor(pairs).t())
    assert torch.allclose(dense.reshape(-1, 16), sparse, atol=1e-5)


def test_agents_not_predicted_get_the_context_free_forecast():
    """As in the reference, only agents with a future to predict receive decoder messages; every other agent's
    forecast is the one of a query with no context (computed once), and does not change the others'."""
    torch.manual_seed(0)
    model = QCNet(**SMALL).eval()
    data = make_batch(2, seed=11)
    data["agent"].predict_mask[[1, 5]] = False
    with torch.no_grad():
        out = model.decoder(data, model.encode(data))
        nothing = data.clone()
        nothing["agent"].predict_mask[:] = False  # no query at all: every agent is context-free
        free = model.decoder(nothing, model.encode(nothing))
    for key, value in out.items():
        assert torch.equal(value[1], value[5]), key
        assert torch.allclose(value[1], free[key][0], atol=1e-6) and torch.allclose(free[key], free[key][:1]), key
        assert not torch.allclose(value[0], value[1]), key


def test_refine_stage_embeds_the_wrapped_proposed_heading():
    """With ``output_head`` the refine stage embeds the proposed heading wrapped to [-pi, pi) (the reference)."""
    torch.manual_seed(0)
    model = QCNet(output_head=True, **SMALL).eval()
    data = make_batch(1, seed=2)
    with torch.no_grad():
        for p in model.decoder.to_loc_propose_head.parameters():
            p.fill_(0.3)  # tanh(.) * pi per step, summed over 60 steps: far outside [-pi, pi)
    seen = {}

    def capture(module, args, kwargs):
        seen["y"] = kwargs["continuous_inputs"]

    hook = model.decoder.y_emb.register_forward_pre_hook(capture, with_kwargs=True)
    with torch.no_grad():
        out = model.decoder(data, model.encode(data))
    hook.remove()
    heading = seen["y"][:, 2]
    assert out["loc_propose_head"].abs().max() > 2 * math.pi
    assert heading.min() >= -math.pi and heading.max() < math.pi
