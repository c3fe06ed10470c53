"""Forecast-MAE's weight initialisation rule (for ``model.apply``)."""

from __future__ import annotations

from torch import nn


def init_weights(module: nn.Module) -> None:
    """Reference initialisation, for ``model.apply(init_weights)``.

    Linear (including :class:`~torch.nn.MultiheadAttention`'s ``out_proj``): xavier-uniform weight, zero bias.
    LayerNorm: weight 1, bias 0. Every other module (Conv1d, BatchNorm1d, the packed ``in_proj`` of
    :class:`~torch.nn.MultiheadAttention`, the relative position bias of
    :class:`~smartpretrain.backbones.forecast_mae.layers.NeighborhoodAttention1D`, ...) is left as it is.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
