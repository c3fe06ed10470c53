"""Two-layer MLP head of QCNet."""

from __future__ import annotations

from torch import Tensor, nn


class MLPLayer(nn.Module):
    r"""``Linear -> LayerNorm -> ReLU -> Linear``.

    .. math:: y = W_2\,\mathrm{ReLU}(\mathrm{LN}(W_1 x + b_1)) + b_2

    State-dict keys: ``mlp.0`` (Linear ``input_dim -> hidden_dim``), ``mlp.1`` (LayerNorm), ``mlp.3`` (Linear
    ``hidden_dim -> output_dim``).

    Args:
        input_dim: size of the input features.
        hidden_dim: size of the hidden layer.
        output_dim: size of the output.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, output_dim),
        )
        from smartpretrain.backbones.qcnet.layers import init_weights

        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., input_dim] -> [..., output_dim]``."""
        return self.mlp(x)
