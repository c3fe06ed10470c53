"""Synthetic driving scenes written in the real raw formats of Argoverse 2 and Argoverse 1.

The generator is the embedded default dataset of the README demo and of the large-scale benchmarks: it needs no
download, is fast (~10-20 ms per scene on one CPU core, files included) and deterministic. Scene ``i`` of a call
depends only on ``(seed, i)`` (``np.random.default_rng([seed, i])``), so generating scenes ``0..99`` in one call or
in chunks (``start_index``) writes identical files. The split name does not enter the seed: use different seeds
(or disjoint ``start_index`` ranges) for different splits.

A scene is built in two format-independent stages, then written in one raw format:

* :mod:`~smartpretrain.data.synthetic.roads`: :func:`build_road_network`, a small intersection network;
* :mod:`~smartpretrain.data.synthetic.traffic`: :func:`simulate_agents`, agents moving on it with AV2 roles;
* :mod:`~smartpretrain.data.synthetic.av2_writer`: :func:`generate_av2` (motion-forecasting parquet +
  ``log_map_archive`` JSON, readable by the ``av2`` package), and
  :mod:`~smartpretrain.data.synthetic.av1_writer`: :func:`generate_av1` (forecasting CSVs with jittered 10 Hz
  timestamps, and optionally one vector-map XML per city). Both write through :mod:`smartpretrain.data.formats`,
  the format modules the converters read with.

CLI (:mod:`~smartpretrain.data.synthetic.cli`)::

    python -m smartpretrain.data.synthetic --format av2 --root DIR --split train --num-scenes 100 --seed 0
"""

from smartpretrain.data.formats.av1 import CITY_IDS as AV1_CITY_MAP_IDS
from smartpretrain.data.formats.av1 import AV1Lane
from smartpretrain.data.formats.av1 import map_path as av1_map_path
from smartpretrain.data.formats.av1 import read_lanes as read_av1_vector_map
from smartpretrain.data.formats.av1 import write_vector_map as write_av1_vector_map
from smartpretrain.data.formats.av2 import CITIES as AV2_CITIES
from smartpretrain.data.formats.av2 import SCHEMA as AV2_SCHEMA
from smartpretrain.data.synthetic.av1_writer import generate_av1
from smartpretrain.data.synthetic.av2_writer import generate_av2
from smartpretrain.data.synthetic.cli import main
from smartpretrain.data.synthetic.roads import Crosswalk, Lane, RoadNetwork, build_road_network
from smartpretrain.data.synthetic.traffic import SimTracks, simulate_agents

__all__ = [
    "AV1_CITY_MAP_IDS",
    "AV2_CITIES",
    "AV2_SCHEMA",
    "AV1Lane",
    "Crosswalk",
    "Lane",
    "RoadNetwork",
    "SimTracks",
    "av1_map_path",
    "build_road_network",
    "generate_av1",
    "generate_av2",
    "main",
    "read_av1_vector_map",
    "simulate_agents",
    "write_av1_vector_map",
]
