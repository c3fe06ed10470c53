"""Forecast-MAE's building blocks (Cheng et al., ICCV 2023), in plain torch (no natten, no timm)."""

from smartpretrain.backbones.forecast_mae.layers.agent_embedding import (
    AgentEmbeddingLayer,
    ConvDownsampler,
    ConvTokenizer,
    NATBlock,
)
from smartpretrain.backbones.forecast_mae.layers.drop_path import DropPath
from smartpretrain.backbones.forecast_mae.layers.init import init_weights
from smartpretrain.backbones.forecast_mae.layers.lane_embedding import LaneEmbeddingLayer
from smartpretrain.backbones.forecast_mae.layers.mlp import Mlp
from smartpretrain.backbones.forecast_mae.layers.multimodal_decoder import MultimodalDecoder
from smartpretrain.backbones.forecast_mae.layers.nat_layer import NATLayer
from smartpretrain.backbones.forecast_mae.layers.neighborhood_attention import (
    NeighborhoodAttention1D,
    neighborhood_indices,
)
from smartpretrain.backbones.forecast_mae.layers.transformer_block import TransformerBlock

__all__ = [
    "AgentEmbeddingLayer",
    "ConvDownsampler",
    "ConvTokenizer",
    "DropPath",
    "LaneEmbeddingLayer",
    "Mlp",
    "MultimodalDecoder",
    "NATBlock",
    "NATLayer",
    "NeighborhoodAttention1D",
    "TransformerBlock",
    "init_weights",
    "neighborhood_indices",
]
