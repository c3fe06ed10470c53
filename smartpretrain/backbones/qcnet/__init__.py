"""QCNet backbone (Zhou et al., CVPR 2023): official module tree, plain-torch radius graphs."""

from smartpretrain.backbones.qcnet.model import QCNet

__all__ = ["QCNet"]
