"""The one contract for "Scene -> sample": what the data layer hands each scene to, and how samples are batched.

* :class:`SceneTransform`: a per-scene callable, run in DataLoader workers (an agent cap, a view sampler, a
  backbone adapter, or a chain of them: :class:`~smartpretrain.data.datamodule.Chain`);
* :class:`SampleAdapter`: a transform whose samples are batched by its own ``collate``. Backbone adapters are
  sample adapters whose ``collate`` also attaches the batch's
  :class:`~smartpretrain.backbones.base.BatchDescription` (``BackboneAdapter`` in
  :mod:`smartpretrain.backbones.base`); the pre-training view transform
  (:class:`~smartpretrain.data.views.SSLViewTransform`) is one that wraps a backbone adapter.

The data layer names these protocols and never a model: backbones import them, not the other way round.
"""

from __future__ import annotations

from typing import Any, Protocol

from smartpretrain.data.scene import Scene

__all__ = ["SampleAdapter", "SceneTransform"]


class SceneTransform(Protocol):
    """Scene -> one sample (any picklable object: it may be built in a DataLoader worker)."""

    def __call__(self, scene: Scene) -> Any: ...


class SampleAdapter(SceneTransform, Protocol):
    """A :class:`SceneTransform` whose samples are batched by its own ``collate``."""

    def collate(self, samples: list[Any]) -> Any:
        """Batch a non-empty list of this transform's samples (the DataLoader's ``collate_fn``)."""
        ...
