"""QCNet's hyper-parameters: one typed, validated value that the model passes to its encoders and decoder.

The defaults are the reference AV2 model, i.e. the hyper-parameters of the published checkpoints (whose key
table :mod:`smartpretrain.backbones.qcnet.checkpoint_spec` writes down). ``configs/model/qcnet*.yaml`` name the
same fields, so Hydra's keyword arguments, ``QCNet.pretrain_overrides`` and ``QCNetConfig(**kwargs)`` agree.
"""

from __future__ import annotations

import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any


class SSLQuery(StrEnum):
    """Which embedding :meth:`QCNet.agent_embeddings` returns for self-supervised pre-training."""

    #: the mode queries after each propose recurrence, ``[A, num_recurrent_steps, num_modes * D]`` (the release)
    PROPOSE = "propose"
    #: the encoder's embedding at the current step, ``[A, 1, D]``
    ENCODER = "encoder"


def _field(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    choices: tuple[int, ...] | None = None,
) -> Any:
    """A field with its allowed values (``>= ge``, ``> gt``, ``< lt``, one of ``choices``), checked by
    ``QCNetConfig.__post_init__``."""
    rules = (("ge", ge), ("gt", gt), ("lt", lt), ("choices", choices))
    return field(default=default, metadata={name: rule for name, rule in rules if rule is not None})


@dataclass(frozen=True)
class QCNetConfig:
    """Every QCNet hyper-parameter, once. A wrong type or value raises ``ValueError`` naming the field."""

    input_dim: int = _field(2, choices=(2, 3))
    """coordinates per map position: 2 (xy) or 3 (xyz: heights and relative z enter the map encoder)"""
    hidden_dim: int = _field(128, ge=1)
    """feature size D of every node, edge and query embedding"""
    output_dim: int = _field(2, choices=(2,))
    """coordinates per predicted position; only 2 (x, y) is implemented"""
    output_head: bool = False
    """also predict headings (von Mises location and concentration per step)"""
    num_historical_steps: int = _field(50, ge=1)
    """history window H; the current step is window index H - 1"""
    num_future_steps: int = _field(60, ge=1)
    """predicted future steps F"""
    num_modes: int = _field(6, ge=1)
    """trajectories K per agent"""
    num_recurrent_steps: int = _field(3, ge=1)
    """propose-stage recurrences, each emitting F / num_recurrent_steps steps (so it must divide F)"""
    num_freq_bands: int = _field(64, ge=1)
    """Fourier frequencies per continuous input"""
    num_map_layers: int = _field(1, ge=0)
    """map encoder layers, each pt2pl then pl2pl attention"""
    num_agent_layers: int = _field(2, ge=0)
    """agent encoder layers, each temporal, pl2a then a2a attention"""
    num_dec_layers: int = _field(2, ge=0)
    """decoder layers per attention pass, each t2m, pl2m then a2m attention (one m2m follows the pass)"""
    num_heads: int = _field(8, ge=1)
    """attention heads"""
    head_dim: int = _field(16, ge=1)
    """size of one attention head"""
    dropout: float = _field(0.1, ge=0.0, lt=1.0)
    """dropout on the attention weights and inside the feed-forward blocks"""
    pl2pl_radius: float = _field(150.0, gt=0.0)
    """metres within which polygons attend to each other (besides the lane topology)"""
    time_span: int | None = _field(10, ge=1)
    """largest step gap of temporal attention; None: the whole history"""
    pl2a_radius: float = _field(50.0, gt=0.0)
    """metres within which an agent attends to polygons, at each history step"""
    a2a_radius: float = _field(50.0, gt=0.0)
    """metres within which agents attend to each other, at each history step"""
    num_t2m_steps: int | None = _field(30, ge=1)
    """last history steps the mode queries attend to; None or a value above H: the whole history (the reference
    masks the steps before ``H - num_t2m_steps`` with a slice, so above H it would keep only ``2H - num_t2m_steps``:
    the AV2 value 30 with AV1's 20-step history would silently read 10 steps)"""
    pl2m_radius: float = _field(150.0, gt=0.0)
    """metres around an agent's current position within which its mode queries attend to polygons"""
    a2m_radius: float = _field(150.0, gt=0.0)
    """metres around an agent's current position within which its mode queries attend to other agents"""
    max_num_neighbors: int = _field(300, ge=1)
    """cap of every radius search, per query node"""
    num_agent_types: int = _field(10, ge=1)
    """rows of the agent-type embedding"""
    num_point_types: int = _field(17, ge=1)
    """rows of the map-point type embedding"""
    num_point_sides: int = _field(3, ge=1)
    """rows of the map-point side embedding (left, right, centre)"""
    num_polygon_types: int = _field(4, ge=1)
    """rows of the polygon type embedding"""
    num_intersection_types: int = _field(3, ge=1)
    """rows of the polygon intersection embedding (yes, no, unknown)"""
    num_pl2pl_types: int = _field(5, ge=1)
    """rows of the polygon-to-polygon edge type embedding (none, predecessor, successor, left, right)"""
    ssl_query: SSLQuery = SSLQuery.PROPOSE
    """the embedding :meth:`QCNet.agent_embeddings` returns (an :class:`SSLQuery` or its value)"""
    propose_stack_only: bool = False
    """build only the encoder and the decoder's propose stack (the release's SSL branch; it cannot forecast)"""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in fields(self):
            value = _checked(spec.name, getattr(self, spec.name), hints[spec.name], spec.metadata)
            object.__setattr__(self, spec.name, value)  # frozen; only an SSLQuery value changes (str -> member)
        if self.num_future_steps % self.num_recurrent_steps != 0:
            raise ValueError(
                f"QCNetConfig.num_recurrent_steps must divide num_future_steps ({self.num_future_steps}), "
                f"got {self.num_recurrent_steps}"
            )

    @classmethod
    def from_overrides(cls, config: QCNetConfig | None = None, **overrides: Any) -> QCNetConfig:
        """``config`` (default: the AV2 model) with ``overrides`` (field name -> value) replacing its fields."""
        unknown = sorted(set(overrides) - {spec.name for spec in fields(cls)})
        if unknown:
            raise TypeError(f"QCNetConfig has no field {', '.join(map(repr, unknown))}")
        return replace(config, **overrides) if config is not None else cls(**overrides)

    @property
    def effective_time_span(self) -> int:
        """``time_span``, or the whole history when it is None."""
        return self.time_span if self.time_span is not None else self.num_historical_steps

    @property
    def effective_num_t2m_steps(self) -> int:
        """``num_t2m_steps``, at most the whole history (which None means)."""
        if self.num_t2m_steps is None:
            return self.num_historical_steps
        return min(self.num_t2m_steps, self.num_historical_steps)

    @property
    def steps_per_recurrence(self) -> int:
        """Future steps each propose recurrence emits."""
        return self.num_future_steps // self.num_recurrent_steps

    @property
    def embedding_dim(self) -> int:
        """Size of one query step of :meth:`QCNet.agent_embeddings`."""
        return self.hidden_dim * (self.num_modes if self.ssl_query == SSLQuery.PROPOSE else 1)


def _checked(name: str, value: Any, hint: Any, rules: Mapping[str, Any]) -> Any:
    """``value`` if it has the type ``hint`` allows and the ``rules`` of :func:`_field` accept it (an
    :class:`SSLQuery` from its value); raises ``ValueError`` naming the field otherwise."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return value
    if SSLQuery in allowed:
        if value not in tuple(SSLQuery):
            raise ValueError(f"QCNetConfig.{name} must be one of {tuple(q.value for q in SSLQuery)}, got {value!r}")
        return SSLQuery(value)
    # bool is an int subclass: a flag is not a count, and a count is not a flag
    if bool in allowed:
        ok, kind = isinstance(value, bool), "a bool"
    elif float in allowed:
        ok, kind = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
    else:
        ok, kind = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an int"
    if not ok:
        raise ValueError(f"QCNetConfig.{name} must be {kind}, got {value!r}")
    if "choices" in rules and value not in rules["choices"]:
        raise ValueError(f"QCNetConfig.{name} must be one of {rules['choices']}, got {value!r}")
    ge, gt, lt = rules.get("ge"), rules.get("gt"), rules.get("lt")
    if (ge is not None and value < ge) or (gt is not None and value <= gt) or (lt is not None and value >= lt):
        low = f">= {ge}" if ge is not None else f"> {gt}" if gt is not None else ""
        allowed_range = " and ".join(part for part in (low, f"< {lt}" if lt is not None else "") if part)
        raise ValueError(f"QCNetConfig.{name} must be {allowed_range}, got {value!r}")
    return value


__all__ = ["QCNetConfig", "SSLQuery"]
