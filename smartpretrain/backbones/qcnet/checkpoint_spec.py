"""The official QCNet state_dict layout (key -> shape), generated from the templates of the fact sheet.

Written from ``docs/qcnet.md`` §6 only, independently of the model code (it reads nothing but the
hyper-parameters of a :class:`QCNetConfig`), so that a test can check that the model's module tree loads official
checkpoints (``strict=True``): 949 keys for the default AV2 model (the published checkpoints' hyper-parameters),
979 with ``output_head``.
"""

from __future__ import annotations

from typing import Any

from smartpretrain.backbones.qcnet.config import QCNetConfig

Shape = tuple[int, ...]


def _att(d: int, pos_emb: bool = True) -> dict[str, Shape]:
    """ATT (30 keys) / ATT0 (25 keys, no positional embedding)."""
    spec: dict[str, Shape] = {
        "to_q.weight": (d, d),
        "to_q.bias": (d,),
        "to_k.weight": (d, d),
        "to_v.weight": (d, d),
        "to_v.bias": (d,),
    }
    if pos_emb:
        spec |= {"to_k_r.weight": (d, d), "to_v_r.weight": (d, d), "to_v_r.bias": (d,)}
    spec |= {
        "to_s.weight": (d, d),
        "to_s.bias": (d,),
        "to_g.weight": (d, 2 * d),
        "to_g.bias": (d,),
        "to_out.weight": (d, d),
        "to_out.bias": (d,),
        "ff_mlp.0.weight": (4 * d, d),
        "ff_mlp.0.bias": (4 * d,),
        "ff_mlp.3.weight": (d, 4 * d),
        "ff_mlp.3.bias": (d,),
    }
    norms = ["attn_prenorm_x_src", "attn_prenorm_x_dst"] + (["attn_prenorm_r"] if pos_emb else [])
    norms += ["attn_postnorm", "ff_prenorm", "ff_postnorm"]
    for norm in norms:
        spec |= {f"{norm}.weight": (d,), f"{norm}.bias": (d,)}
    return spec


def _fe(n: int, d: int, bands: int) -> dict[str, Shape]:
    """FE(n): 6n + 5 keys (4 for n = 0)."""
    spec: dict[str, Shape] = {"freqs.weight": (n, bands)} if n > 0 else {}
    for i in range(n):
        spec |= {
            f"mlps.{i}.0.weight": (d, 2 * bands + 1),
            f"mlps.{i}.0.bias": (d,),
            f"mlps.{i}.1.weight": (d,),
            f"mlps.{i}.1.bias": (d,),
            f"mlps.{i}.3.weight": (d, d),
            f"mlps.{i}.3.bias": (d,),
        }
    spec |= {"to_out.0.weight": (d,), "to_out.0.bias": (d,), "to_out.2.weight": (d, d), "to_out.2.bias": (d,)}
    return spec


def _mlp(o: int, d: int) -> dict[str, Shape]:
    """MLP(o): 6 keys."""
    return {
        "mlp.0.weight": (d, d),
        "mlp.0.bias": (d,),
        "mlp.1.weight": (d,),
        "mlp.1.bias": (d,),
        "mlp.3.weight": (o, d),
        "mlp.3.bias": (o,),
    }


def _prefixed(prefix: str, spec: dict[str, Shape]) -> dict[str, Shape]:
    return {f"{prefix}.{key}": shape for key, shape in spec.items()}


def official_state_dict_spec(config: QCNetConfig | None = None, **overrides: Any) -> dict[str, Shape]:
    """Key -> shape of the official QCNet state_dict for ``config`` (default: the AV2 model) with ``overrides``
    replacing its fields, as ``QCNet(config, **overrides)`` takes them."""
    config = QCNetConfig.from_overrides(config, **overrides)
    if config.propose_stack_only:
        raise ValueError("the official layout is the full model: propose_stack_only must be False")
    d, b = config.hidden_dim, config.num_freq_bands
    extra = config.input_dim - 2  # input_dim 3: one more continuous input per map embedding (fact sheet §6)
    spec: dict[str, Shape] = {}

    enc = "encoder.map_encoder"
    spec |= {
        f"{enc}.type_pt_emb.weight": (config.num_point_types, d),
        f"{enc}.side_pt_emb.weight": (config.num_point_sides, d),
        f"{enc}.type_pl_emb.weight": (config.num_polygon_types, d),
        f"{enc}.int_pl_emb.weight": (config.num_intersection_types, d),
        f"{enc}.type_pl2pl_emb.weight": (config.num_pl2pl_types, d),
    }
    for name, n in (("x_pt_emb", 1), ("x_pl_emb", 0), ("r_pt2pl_emb", 3), ("r_pl2pl_emb", 3)):
        spec |= _prefixed(f"{enc}.{name}", _fe(n + extra, d, b))
    for stack in ("pt2pl_layers", "pl2pl_layers"):
        for i in range(config.num_map_layers):
            spec |= _prefixed(f"{enc}.{stack}.{i}", _att(d))

    enc = "encoder.agent_encoder"
    spec[f"{enc}.type_a_emb.weight"] = (config.num_agent_types, d)
    for name, n in (("x_a_emb", 4), ("r_t_emb", 4), ("r_pl2a_emb", 3), ("r_a2a_emb", 3)):
        spec |= _prefixed(f"{enc}.{name}", _fe(n, d, b))
    for stack in ("t_attn_layers", "pl2a_attn_layers", "a2a_attn_layers"):
        for i in range(config.num_agent_layers):
            spec |= _prefixed(f"{enc}.{stack}.{i}", _att(d))

    dec = "decoder"
    spec[f"{dec}.traj_emb_h0"] = (1, d)
    spec[f"{dec}.mode_emb.weight"] = (config.num_modes, d)
    for name, n in (("r_t2m_emb", 4), ("r_pl2m_emb", 3), ("r_a2m_emb", 3), ("y_emb", 3 if config.output_head else 2)):
        spec |= _prefixed(f"{dec}.{name}", _fe(n, d, b))
    spec |= {
        f"{dec}.traj_emb.weight_ih_l0": (3 * d, d),
        f"{dec}.traj_emb.weight_hh_l0": (3 * d, d),
        f"{dec}.traj_emb.bias_ih_l0": (3 * d,),
        f"{dec}.traj_emb.bias_hh_l0": (3 * d,),
    }
    for stage in ("propose", "refine"):
        for kind in ("t2m", "pl2m", "a2m"):
            for i in range(config.num_dec_layers):
                spec |= _prefixed(f"{dec}.{kind}_{stage}_attn_layers.{i}", _att(d))
        spec |= _prefixed(f"{dec}.m2m_{stage}_attn_layer", _att(d, pos_emb=False))
    f = config.num_future_steps
    f_per_rec = f // config.num_recurrent_steps
    heads = {
        "to_loc_propose_pos": 2 * f_per_rec,
        "to_scale_propose_pos": 2 * f_per_rec,
        "to_loc_refine_pos": 2 * f,
        "to_scale_refine_pos": 2 * f,
        "to_pi": 1,
    }
    if config.output_head:
        heads |= {
            "to_loc_propose_head": f_per_rec,
            "to_conc_propose_head": f_per_rec,
            "to_loc_refine_head": f,
            "to_conc_refine_head": f,
        }
    for name, o in heads.items():
        spec |= _prefixed(f"{dec}.{name}", _mlp(o, d))
    return spec
