"""QCNetConfig: keyword arguments, a config object and the Hydra configs build the same QCNet; bad values refused."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hydra.utils import instantiate

from smartpretrain.backbones.qcnet import QCNet
from smartpretrain.backbones.qcnet.checkpoint_spec import official_state_dict_spec
from smartpretrain.backbones.qcnet.config import QCNetConfig, SSLQuery
from smartpretrain.config import compose_config

SMALL = dict(hidden_dim=32, num_heads=2, head_dim=16, num_freq_bands=16, num_agent_layers=1, num_dec_layers=1)


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops on a shared CPU: one thread avoids OpenMP contention (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layout(model: torch.nn.Module) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    return [name for name, _ in model.named_modules()], {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        SMALL | {"output_head": True, "input_dim": 3},
        SMALL | {"num_modes": 1, "propose_stack_only": True, "time_span": None, "num_t2m_steps": None},
    ],
    ids=["av2", "heading_xyz", "ssl_branch"],
)
def test_kwargs_and_config_build_the_same_model(fields):
    config = QCNetConfig(**fields)
    assert QCNetConfig(**dataclasses.asdict(config)) == config  # config -> kwargs -> config
    torch.manual_seed(0)
    from_kwargs = QCNet(**fields)
    torch.manual_seed(0)
    from_config = QCNet(config)
    assert from_kwargs.config == from_config.config == config
    assert _layout(from_kwargs) == _layout(from_config)
    a, b = from_kwargs.state_dict(), from_config.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    # one config object, read by every sub-module
    for module in (from_config.encoder.map_encoder, from_config.encoder.agent_encoder, from_config.decoder):
        assert module.config is from_config.config
    # the key table written from the fact sheet follows the same config
    if not config.propose_stack_only:
        assert official_state_dict_spec(config) == _layout(from_config)[1]


def test_overrides_replace_fields_of_a_config():
    base = QCNetConfig(**SMALL)
    model = QCNet(base, **QCNet.pretrain_overrides)
    assert model.config == dataclasses.replace(base, num_modes=1, propose_stack_only=True)
    assert (model.num_modes, model.propose_stack_only, model.config.hidden_dim) == (1, True, 32)
    assert base.num_modes == 6  # the given config is not changed
    assert official_state_dict_spec(num_modes=1)["decoder.mode_emb.weight"] == (1, 128)
    with pytest.raises(TypeError, match="QCNetConfig has no field 'num_layers'"):
        QCNet(base, num_layers=3)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "qcnet"),
        (["data=av1"], "qcnet_small"),
        (["data=womd"], "qcnet"),
    ],
)
def test_hydra_model_configs_are_config_fields(overrides, name):
    cfg = compose_config("train", [f"model={name}", *overrides])
    fields = {key: value for key, value in cfg.model.items() if key != "_target_"}
    assert set(fields) <= {spec.name for spec in dataclasses.fields(QCNetConfig)}
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert isinstance(model, QCNet) and model.config == QCNetConfig(**fields)
    assert model.config.num_historical_steps == cfg.data.num_historical_steps
    assert model.make_adapter().num_future_steps == cfg.data.num_future_steps


def test_published_checkpoint_hyper_parameters_are_the_defaults():
    config = QCNetConfig()
    spec = official_state_dict_spec(config)
    assert len(spec) == 949 and sum(math.prod(shape) for shape in spec.values()) == 7_662_465
    assert (config.hidden_dim, config.num_modes, config.num_freq_bands, config.num_future_steps) == (128, 6, 64, 60)
    assert (config.pl2pl_radius, config.pl2a_radius, config.a2a_radius) == (150.0, 50.0, 50.0)
    assert (config.pl2m_radius, config.a2m_radius, config.time_span, config.num_t2m_steps) == (150.0, 150.0, 10, 30)
    with pytest.raises(ValueError, match="propose_stack_only must be False"):
        official_state_dict_spec(propose_stack_only=True)


def test_derived_values():
    config = QCNetConfig(num_historical_steps=20, num_future_steps=30, num_recurrent_steps=5, time_span=None)
    # num_t2m_steps 30 (the AV2 value) on a 20-step history: the whole history, not the reference slice's 10
    assert (config.effective_time_span, config.effective_num_t2m_steps) == (20, 20)
    assert QCNetConfig(num_historical_steps=20, num_t2m_steps=None).effective_num_t2m_steps == 20
    assert QCNetConfig(num_historical_steps=50, num_t2m_steps=30).effective_num_t2m_steps == 30
    assert config.steps_per_recurrence == 6
    assert config.embedding_dim == 128 * 6
    encoder_query = QCNetConfig(ssl_query="encoder")
    assert encoder_query.ssl_query is SSLQuery.ENCODER and encoder_query.embedding_dim == 128
    assert QCNet(**SMALL, ssl_query="encoder").embedding_dim == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_dim = 64  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_dim": 4}, r"QCNetConfig\.input_dim must be one of \(2, 3\), got 4"),
        ({"output_dim": 3}, r"QCNetConfig\.output_dim must be one of \(2,\), got 3"),
        ({"hidden_dim": 0}, r"QCNetConfig\.hidden_dim must be >= 1, got 0"),
        ({"hidden_dim": 12.0}, r"QCNetConfig\.hidden_dim must be an int, got 12\.0"),
        ({"num_modes": True}, r"QCNetConfig\.num_modes must be an int, got True"),
        ({"num_agent_layers": -1}, r"QCNetConfig\.num_agent_layers must be >= 0, got -1"),
        ({"dropout": 1.0}, r"QCNetConfig\.dropout must be >= 0\.0 and < 1\.0, got 1\.0"),
        ({"a2a_radius": 0}, r"QCNetConfig\.a2a_radius must be > 0\.0, got 0"),
        ({"pl2m_radius": "far"}, r"QCNetConfig\.pl2m_radius must be a number, got 'far'"),
        ({"time_span": 0}, r"QCNetConfig\.time_span must be >= 1, got 0"),
        ({"num_t2m_steps": 2.5}, r"QCNetConfig\.num_t2m_steps must be an int, got 2\.5"),
        ({"output_head": 1}, r"QCNetConfig\.output_head must be a bool, got 1"),
        ({"ssl_query": "mean"}, r"QCNetConfig\.ssl_query must be one of \('propose', 'encoder'\), got 'mean'"),
        ({"num_future_steps": 80}, r"QCNetConfig\.num_recurrent_steps must divide num_future_steps \(80\), got 3"),
    ],
)
def test_bad_values_are_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        QCNetConfig(**fields)
    with pytest.raises(ValueError, match=f"^{message}$"):
        QCNet(**fields)  # refused before any module is built
