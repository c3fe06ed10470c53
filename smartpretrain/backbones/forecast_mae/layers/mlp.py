"""Two-layer perceptron (Linear, activation, Linear) of the transformer blocks."""

from __future__ import annotations

from torch import Tensor, nn


class Mlp(nn.Module):
    r"""Position-wise feed-forward network

    .. math::
        y = W_2\, \mathrm{drop}(\mathrm{act}(W_1 x + b_1)) + b_2, \quad \text{then } \mathrm{drop}(y).

    State-dict keys: ``fc1.{weight,bias}`` ``[hidden, in]``, ``fc2.{weight,bias}`` ``[out, hidden]``.

    Args:
        in_features: input size.
        hidden_features: hidden size.
        out_features: output size (default: ``in_features``).
        act: activation class, instantiated without arguments (default :class:`torch.nn.GELU`).
        drop: dropout after the activation and after ``fc2``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        act: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        out_features = out_features if out_features is not None else in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))
