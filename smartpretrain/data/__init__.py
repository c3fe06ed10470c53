"""Unified scenes, converters, the scene cache and the datamodule."""

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.scene import AgentTracks, MapData, Scene

__all__ = ["AgentTracks", "MapData", "Scene", "SceneCache"]
