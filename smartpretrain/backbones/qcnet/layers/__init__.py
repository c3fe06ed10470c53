"""QCNet's building blocks (one layer per file) and the reference weight initialisation."""

from __future__ import annotations

from torch import nn

from smartpretrain.backbones.qcnet.layers.attention_layer import AttentionLayer
from smartpretrain.backbones.qcnet.layers.fourier_embedding import FourierEmbedding
from smartpretrain.backbones.qcnet.layers.mlp_layer import MLPLayer


def init_weights(module: nn.Module) -> None:
    """Reference initialisation, for ``model.apply``.

    Linear: xavier-uniform weight, zero bias. Embedding: N(0, 0.02). LayerNorm: weight 1, bias 0.
    GRU: xavier-uniform on each gate block of ``weight_ih``, orthogonal on each gate block of ``weight_hh``,
    zero biases. Other modules are left as they are.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.GRU):
        gates = 3
        for name, param in module.named_parameters():
            if name.startswith("weight_ih"):
                for block in param.chunk(gates, dim=0):
                    nn.init.xavier_uniform_(block)
            elif name.startswith("weight_hh"):
                for block in param.chunk(gates, dim=0):
                    nn.init.orthogonal_(block)
            elif name.startswith("bias"):
                nn.init.zeros_(param)


__all__ = ["AttentionLayer", "FourierEmbedding", "MLPLayer", "init_weights"]
