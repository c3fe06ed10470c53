"""Reusable test helpers: small hand-made scenes with known contents, and a converter that serves them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smartpretrain.data.converters.base import (
    ConversionError,
    ConvertedScene,
    DropReason,
    Repair,
    RepairKind,
    SceneConverter,
)
from smartpretrain.data.scene import AgentTracks, MapData, Scene
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset, EdgeType, LineType, PolygonType, Side

# What make_tiny_scene() contains (tests compare summaries against these numbers).
TINY_NUM_STEPS = 20
TINY_CURRENT_STEP = 9
TINY_ORIGIN = (1000.0, 2000.0, 0.0)
TINY_AGENT_IDS = ("focal", "AV", "ped")
TINY_FOCAL_GAP = (3, 4)  # steps at which the focal agent is not observed
TINY_SDC_GAP = (15,)
TINY_PED_STEPS = (*range(2, 8), *range(12, 17))  # the pedestrian is not observed at the present (step 9)
TINY_POLYGONS = {"VEHICLE_LANE": 2, "BUS_LANE": 1, "CROSSWALK": 1, "ROAD_EDGE": 1}
TINY_POLYLINES = {
    "LEFT": {"DASHED_WHITE": 1, "DOUBLE_SOLID_YELLOW": 1, "NONE": 1, "CROSSWALK": 1},
    "RIGHT": {"SOLID_WHITE": 2, "DASHED_WHITE": 1, "CROSSWALK": 1},
    "CENTER": {"CENTERLINE": 4, "UNKNOWN": 1},
}
TINY_NUM_POINTS = 5 * 6 + 8 * 3 + 2 * 3 + 4  # two straight lanes, a curved lane, a crosswalk, a road edge
TINY_EDGES = {"PRED": 1, "SUCC": 1, "LEFT": 1, "RIGHT": 1}


def _line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([x, y, np.zeros_like(x)], axis=1).astype(np.float32)


def _tiny_map() -> MapData:
    """Two parallel eastbound lanes, a bus lane curving right after the lower one, a crosswalk, a road edge."""
    x = np.linspace(0.0, 40.0, 5)
    theta = np.linspace(np.pi / 2, np.pi / 6, 8)  # a right turn around (40, -20)

    def arc(r: float) -> np.ndarray:
        return _line(40.0 + r * np.cos(theta), -20.0 + r * np.sin(theta))

    polygons: list[tuple[PolygonType, list[tuple[Side, LineType, np.ndarray]]]] = [
        (
            PolygonType.VEHICLE_LANE,
            [  # lane 0: y in [0, 3.5]
                (Side.LEFT, LineType.DASHED_WHITE, _line(x, np.full(5, 3.5))),
                (Side.RIGHT, LineType.SOLID_WHITE, _line(x, np.zeros(5))),
                (Side.CENTER, LineType.CENTERLINE, _line(x, np.full(5, 1.75))),
            ],
        ),
        (
            PolygonType.VEHICLE_LANE,
            [  # lane 1: y in [3.5, 7], left neighbour of lane 0
                (Side.LEFT, LineType.DOUBLE_SOLID_YELLOW, _line(x, np.full(5, 7.0))),
                (Side.RIGHT, LineType.DASHED_WHITE, _line(x, np.full(5, 3.5))),
                (Side.CENTER, LineType.CENTERLINE, _line(x, np.full(5, 5.25))),
            ],
        ),
        (
            PolygonType.BUS_LANE,
            [  # lane 2: successor of lane 0, turning right
                (Side.LEFT, LineType.NONE, arc(23.5)),
                (Side.RIGHT, LineType.SOLID_WHITE, arc(20.0)),
                (Side.CENTER, LineType.CENTERLINE, arc(21.75)),
            ],
        ),
        (
            PolygonType.CROSSWALK,
            [  # across both lanes at x = 20
                (Side.LEFT, LineType.CROSSWALK, _line(np.array([18.0, 18.0]), np.array([-2.0, 9.0]))),
                (Side.RIGHT, LineType.CROSSWALK, _line(np.array([22.0, 22.0]), np.array([-2.0, 9.0]))),
                (Side.CENTER, LineType.CENTERLINE, _line(np.array([20.0, 20.0]), np.array([-2.0, 9.0]))),
            ],
        ),
        (
            PolygonType.ROAD_EDGE,
            [
                (Side.CENTER, LineType.UNKNOWN, _line(np.array([0.0, 15.0, 30.0, 45.0]), np.full(4, 9.0))),
            ],
        ),
    ]
    polyline_polygon, sides, types, chunks = [], [], [], []
    for p, (_, lines) in enumerate(polygons):
        for side, line_type, pts in lines:
            polyline_polygon.append(p)
            sides.append(side)
            types.append(line_type)
            chunks.append(pts)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chunks])]).astype(np.int32)
    edges = [(2, 0, EdgeType.SUCC), (0, 2, EdgeType.PRED), (1, 0, EdgeType.LEFT), (0, 1, EdgeType.RIGHT)]
    return MapData(
        polygon_ids=np.arange(100, 100 + len(polygons), dtype=np.int64),
        polygon_type=np.array([t for t, _ in polygons], np.int8),
        polygon_is_intersection=np.array([0, 0, 1, 2, 2], np.int8),
        polyline_polygon=np.array(polyline_polygon, np.int32),
        polyline_side=np.array(sides, np.int8),
        polyline_type=np.array(types, np.int8),
        polyline_offsets=offsets,
        points=np.concatenate(chunks).astype(np.float32),
        edge_index=np.array([[s for s, _, _ in edges], [d for _, d, _ in edges]], np.int32),
        edge_type=np.array([t for _, _, t in edges], np.int8),
    )


def make_tiny_scene(
    scenario_id: str = "tiny-0", *, with_map: bool = True, with_size: bool = True, dataset: Dataset = Dataset.SYNTHETIC
) -> Scene:
    """A small valid scene with known contents (see the ``TINY_*`` constants).

    Three agents on a 20-step timeline (present = step 9): a focal vehicle on lane 0 with a gap at steps 3-4,
    the SDC (id "AV", role UNSCORED) on lane 1 with a gap at step 15, and a pedestrian (FRAGMENT) walking over
    the crosswalk, observed at steps 2-7 and 12-16 only. The map has 5 polygons (``TINY_POLYGONS``), 13
    polylines and 4 topology edges; ``with_map=False`` gives an empty map, ``with_size=False`` no agent sizes.
    """
    t = np.arange(TINY_NUM_STEPS, dtype=np.float64)
    n = len(TINY_AGENT_IDS)
    position = np.zeros((n, TINY_NUM_STEPS, 3), np.float64)
    position[0, :, 0], position[0, :, 1] = 4.0 + 1.5 * t, 1.75
    position[1, :, 0], position[1, :, 1] = 1.0 + 1.2 * t, 5.25
    position[2, :, 0], position[2, :, 1] = 20.0 + 0.05 * t, -1.5 + 0.4 * t
    velocity = np.gradient(position[..., :2], 0.1, axis=1)
    heading = np.arctan2(velocity[..., 1], velocity[..., 0])
    valid = np.ones((n, TINY_NUM_STEPS), bool)
    valid[0, list(TINY_FOCAL_GAP)] = False
    valid[1, list(TINY_SDC_GAP)] = False
    valid[2] = False
    valid[2, list(TINY_PED_STEPS)] = True
    position[~valid], velocity[~valid], heading[~valid] = 0.0, 0.0, 0.0
    agents = AgentTracks(
        ids=list(TINY_AGENT_IDS),
        type=np.array([AgentType.VEHICLE, AgentType.VEHICLE, AgentType.PEDESTRIAN], np.int8),
        role=np.array([AgentRole.FOCAL, AgentRole.UNSCORED, AgentRole.FRAGMENT], np.int8),
        is_sdc=np.array([False, True, False]),
        position=position.astype(np.float32),
        heading=heading.astype(np.float32),
        velocity=velocity.astype(np.float32),
        valid=valid,
        size=np.array([[4.5, 2.0, 1.6], [4.8, 2.1, 1.7], [0.6, 0.6, 1.8]], np.float32) if with_size else None,
    )
    scene = Scene(
        scenario_id=scenario_id,
        dataset=dataset,
        city="testville",
        num_steps=TINY_NUM_STEPS,
        current_step=TINY_CURRENT_STEP,
        origin=np.array(TINY_ORIGIN, np.float64),
        agents=agents,
        map=_tiny_map() if with_map else MapData.empty(),
    )
    scene.validate()
    return scene


class TinyConverter(SceneConverter):
    """Serves hand-made scenes as a "raw split", to build real caches (with a real manifest) in tests.

    Items are ``tiny-00``, ``tiny-01``, ...; items in ``drop`` fail with :attr:`DropReason.CORRUPT_FILE`, items in
    ``repair`` come with one :attr:`RepairKind.UNKNOWN_OBJECT_TYPE` repair, odd items have an empty map.
    """

    dataset = Dataset.SYNTHETIC

    def __init__(self, num_items: int, split: str = "val", drop: tuple[int, ...] = (), repair: tuple[int, ...] = ()):
        super().__init__(Path("/nonexistent/tiny"), split)
        self.num_items, self.drop, self.repair = num_items, set(drop), set(repair)

    def list_items(self) -> list[str]:
        return [f"tiny-{i:02d}" for i in range(self.num_items)]

    def convert(self, item: str) -> ConvertedScene:
        i = int(item.split("-")[1])
        if i in self.drop:
            raise ConversionError(DropReason.CORRUPT_FILE, self.item_path(item), "made-up corruption", item)
        scene = make_tiny_scene(item, with_map=i % 2 == 0)
        repairs = (
            [Repair(RepairKind.UNKNOWN_OBJECT_TYPE, str(self.item_path(item)), "martian")] if i in self.repair else []
        )
        return ConvertedScene(scene, repairs)


def convert_av2_fixture(out_root: Path) -> Path:
    """Convert the real AV2 fixture split (``../shared``) into ``out_root/av2/val``; returns that folder.

    Callers skip first when the shared data is absent (``tests.conftest.require_shared``).
    """
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av2 import Av2Converter
    from tests.conftest import AV2_FIXTURE_ROOT

    out = Path(out_root) / "av2" / "val"
    convert_split(Av2Converter(AV2_FIXTURE_ROOT, "val"), out, ConversionSettings(progress=False))
    return out
