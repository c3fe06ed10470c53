"""Where mixed precision stops: float32 regions for the parts of a training step that bf16 would hurt.

Under ``trainer.precision=bf16-mixed`` Lightning runs every step inside ``torch.autocast(<device>, bfloat16)``,
so matmuls and linear layers compute in bfloat16 (8 bits of mantissa). That suits a backbone's layers; it does
not suit a loss (InfoNCE logits divided by a temperature of 0.07, sums over thousands of terms) or BatchNorm
statistics. The tasks therefore compute what follows the backbone in float32: :func:`float32_region` switches
autocast off for a device and hands over :func:`upcast`, which turns the backbone's bfloat16 / float16 outputs
into float32. Without autocast (``32-true``, also ``bf16-true``) the region changes nothing, so those runs compute
exactly as before.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["LOW_PRECISION", "float32_region", "upcast"]

#: the floating dtypes autocast computes in, and :func:`upcast` turns into float32
LOW_PRECISION = (torch.bfloat16, torch.float16)

T = TypeVar("T")


@contextmanager
def float32_region(device: torch.device | str) -> Iterator[Callable[[Any], Any]]:
    """Autocast off for ``device``'s type inside the block. Ops then compute in their inputs' dtype, so the block
    gets what to apply to what enters it: :func:`upcast` when autocast was on, else the identity (a model converted
    to bfloat16 as a whole, ``bf16-true``, keeps computing in its own dtype)."""
    device_type = torch.device(device).type
    entering = upcast if torch.is_autocast_enabled(device_type) else _unchanged
    with torch.autocast(device_type=device_type, enabled=False):
        yield entering


def _unchanged(value: T) -> T:
    return value


def upcast(value: T) -> T:
    """``value`` with every bfloat16 / float16 tensor in it as float32, the rest untouched.

    Recurses through dicts (subclasses keep their type), other mappings (rebuilt as dicts), lists,
    tuples (named ones included) and dataclass instances (rebuilt with :func:`dataclasses.replace`), so a
    :class:`~smartpretrain.backbones.base.Forecast` comes back as a ``Forecast``. Integer, boolean, float32 and
    float64 tensors are returned as they are (no copy).
    """
    if isinstance(value, Tensor):
        return value.float() if value.dtype in LOW_PRECISION else value  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: upcast(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)  # type: ignore[return-value]
    if isinstance(value, dict):  # a copy keeps a dict subclass's type and attributes (Forecast-MAE's batch)
        copied: Any = copy.copy(value)
        copied.update({key: upcast(item) for key, item in value.items()})
        return copied
    if isinstance(value, Mapping):
        return {key: upcast(item) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, tuple):
        items = [upcast(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)  # type: ignore[return-value]
    if isinstance(value, list):
        return [upcast(item) for item in value]  # type: ignore[return-value]
    return value
