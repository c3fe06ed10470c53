"""Unified label taxonomy and the per-dataset mapping tables into it.

Every enum is *append-only*: a value, once released, keeps its integer forever, because the integers are what
the cache stores and what embedding tables of trained models index. The first members of each enum follow
Argoverse 2 (and QCNet's class order), so that a table enlarged for more datasets keeps AV2's rows first.
The tables mapping each dataset's raw labels are rendered into ``docs/data_format.md``.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Dataset(StrEnum):
    """Source dataset of a scene."""

    AV1 = "av1"
    AV2 = "av2"
    WOMD = "womd"
    ETH_UCY = "eth_ucy"
    SYNTHETIC = "synthetic"


class AgentType(IntEnum):
    """Unified agent (object) type. Members 0-9 are AV2's object types in AV2's order."""

    VEHICLE = 0
    PEDESTRIAN = 1
    MOTORCYCLIST = 2
    CYCLIST = 3
    BUS = 4
    STATIC = 5
    BACKGROUND = 6
    CONSTRUCTION = 7
    RIDERLESS_BICYCLE = 8
    UNKNOWN = 9


class AgentRole(IntEnum):
    """Role of an agent in the benchmark; values equal AV2's ``TrackCategory``."""

    FRAGMENT = 0
    UNSCORED = 1
    SCORED = 2
    FOCAL = 3


class PolygonType(IntEnum):
    """Type of a map polygon. 0-3 are QCNet's AV2 classes (VEHICLE, BIKE, BUS, PEDESTRIAN)."""

    VEHICLE_LANE = 0
    BIKE_LANE = 1
    BUS_LANE = 2
    CROSSWALK = 3
    ROAD_LINE = 4
    ROAD_EDGE = 5
    STOP_SIGN = 6
    SPEED_BUMP = 7
    DRIVEWAY = 8


class Intersection(IntEnum):
    """Whether a polygon lies in an intersection; UNKNOWN where the dataset does not say (crosswalks, WOMD)."""

    NO = 0
    YES = 1
    UNKNOWN = 2


class LineType(IntEnum):
    """Type of a map polyline. 0-16 are AV2's lane-mark types plus CROSSWALK and CENTERLINE, in QCNet's order."""

    DASH_SOLID_YELLOW = 0
    DASH_SOLID_WHITE = 1
    DASHED_WHITE = 2
    DASHED_YELLOW = 3
    DOUBLE_SOLID_YELLOW = 4
    DOUBLE_SOLID_WHITE = 5
    DOUBLE_DASH_YELLOW = 6
    DOUBLE_DASH_WHITE = 7
    SOLID_YELLOW = 8
    SOLID_WHITE = 9
    SOLID_DASH_WHITE = 10
    SOLID_DASH_YELLOW = 11
    SOLID_BLUE = 12
    NONE = 13
    UNKNOWN = 14
    CROSSWALK = 15
    CENTERLINE = 16
    ROAD_EDGE_BOUNDARY = 17  # WOMD road edges: the road's outer boundary ...
    ROAD_EDGE_MEDIAN = 18  # ... or a median between opposite directions


class SignalState(IntEnum):
    """Traffic-signal state of a controlled lane; values equal WOMD's ``TrafficSignalLaneState.State``."""

    UNKNOWN = 0
    ARROW_STOP = 1
    ARROW_CAUTION = 2
    ARROW_GO = 3
    STOP = 4
    CAUTION = 5
    GO = 6
    FLASHING_STOP = 7
    FLASHING_CAUTION = 8


class PredictionDifficulty(IntEnum):
    """WOMD ``tracks_to_predict`` difficulty; NONE for agents not to predict (and WOMD's own NONE)."""

    NONE = 0
    LEVEL_1 = 1
    LEVEL_2 = 2


class Side(IntEnum):
    """Which part of its polygon a polyline is (QCNet's point sides)."""

    LEFT = 0
    RIGHT = 1
    CENTER = 2


class EdgeType(IntEnum):
    """Map topology relation. An edge ``(src=j, dst=i, type)`` reads "j is the <type> of i"; 0 is reserved."""

    NONE = 0
    PRED = 1
    SUCC = 2
    LEFT = 3
    RIGHT = 4


# ---------------------------------------------------------------------------------------------------------------
# Raw label -> unified enum, per dataset. Unknown raw labels map to AgentType.UNKNOWN and are counted by converters
# (converters/base.py: map_labels).

AV2_AGENT_TYPES: dict[str, AgentType] = {
    "vehicle": AgentType.VEHICLE,
    "pedestrian": AgentType.PEDESTRIAN,
    "motorcyclist": AgentType.MOTORCYCLIST,
    "cyclist": AgentType.CYCLIST,
    "bus": AgentType.BUS,
    "static": AgentType.STATIC,
    "background": AgentType.BACKGROUND,
    "construction": AgentType.CONSTRUCTION,
    "riderless_bicycle": AgentType.RIDERLESS_BICYCLE,
    "unknown": AgentType.UNKNOWN,
}

# AV1 has no semantic classes: AGENT (the focal track) and AV are vehicles; OTHERS may be anything.
AV1_AGENT_TYPES: dict[str, AgentType] = {
    "AGENT": AgentType.VEHICLE,
    "AV": AgentType.VEHICLE,
    "OTHERS": AgentType.UNKNOWN,
}

# WOMD enums by their proto names. TYPE_OTHER is a real class without a unified counterpart (UNKNOWN, no repair);
# TYPE_UNSET is a missing label (UNKNOWN, counted as a repair).
WOMD_AGENT_TYPES: dict[str, AgentType] = {
    "TYPE_VEHICLE": AgentType.VEHICLE,
    "TYPE_PEDESTRIAN": AgentType.PEDESTRIAN,
    "TYPE_CYCLIST": AgentType.CYCLIST,
    "TYPE_OTHER": AgentType.UNKNOWN,
}

WOMD_LANE_TYPES: dict[str, PolygonType] = {
    "TYPE_UNDEFINED": PolygonType.VEHICLE_LANE,
    "TYPE_FREEWAY": PolygonType.VEHICLE_LANE,
    "TYPE_SURFACE_STREET": PolygonType.VEHICLE_LANE,
    "TYPE_BIKE_LANE": PolygonType.BIKE_LANE,
}

# A passing double yellow is one solid and one broken line; AV2's DASH_SOLID_YELLOW is the same marking.
WOMD_ROAD_LINE_TYPES: dict[str, LineType] = {
    "TYPE_UNKNOWN": LineType.UNKNOWN,
    "TYPE_BROKEN_SINGLE_WHITE": LineType.DASHED_WHITE,
    "TYPE_SOLID_SINGLE_WHITE": LineType.SOLID_WHITE,
    "TYPE_SOLID_DOUBLE_WHITE": LineType.DOUBLE_SOLID_WHITE,
    "TYPE_BROKEN_SINGLE_YELLOW": LineType.DASHED_YELLOW,
    "TYPE_BROKEN_DOUBLE_YELLOW": LineType.DOUBLE_DASH_YELLOW,
    "TYPE_SOLID_SINGLE_YELLOW": LineType.SOLID_YELLOW,
    "TYPE_SOLID_DOUBLE_YELLOW": LineType.DOUBLE_SOLID_YELLOW,
    "TYPE_PASSING_DOUBLE_YELLOW": LineType.DASH_SOLID_YELLOW,
}

WOMD_ROAD_EDGE_TYPES: dict[str, LineType] = {
    "TYPE_UNKNOWN": LineType.UNKNOWN,
    "TYPE_ROAD_EDGE_BOUNDARY": LineType.ROAD_EDGE_BOUNDARY,
    "TYPE_ROAD_EDGE_MEDIAN": LineType.ROAD_EDGE_MEDIAN,
}

# map feature (proto oneof name) -> polygon type
WOMD_MAP_FEATURES: dict[str, PolygonType] = {
    "lane": PolygonType.VEHICLE_LANE,  # refined by WOMD_LANE_TYPES
    "road_line": PolygonType.ROAD_LINE,
    "road_edge": PolygonType.ROAD_EDGE,
    "stop_sign": PolygonType.STOP_SIGN,
    "crosswalk": PolygonType.CROSSWALK,
    "speed_bump": PolygonType.SPEED_BUMP,
    "driveway": PolygonType.DRIVEWAY,
}

AV2_LANE_TYPES: dict[str, PolygonType] = {
    "VEHICLE": PolygonType.VEHICLE_LANE,
    "BIKE": PolygonType.BIKE_LANE,
    "BUS": PolygonType.BUS_LANE,
}

# AV2 lane-mark names are exactly the first LineType member names.
AV2_LANE_MARK_TYPES: dict[str, LineType] = {m.name: m for m in LineType if m <= LineType.UNKNOWN}

AV2_CATEGORIES: dict[int, AgentRole] = {int(r): r for r in AgentRole}

MAPPING_TABLES: dict[str, dict] = {
    "av2.object_type -> AgentType": AV2_AGENT_TYPES,
    "av2.object_category -> AgentRole": AV2_CATEGORIES,
    "av2.lane_type -> PolygonType": AV2_LANE_TYPES,
    "av2.lane_mark_type -> LineType": AV2_LANE_MARK_TYPES,
    "av1.OBJECT_TYPE -> AgentType": AV1_AGENT_TYPES,
    "womd.Track.object_type -> AgentType": WOMD_AGENT_TYPES,
    "womd.MapFeature (oneof) -> PolygonType": WOMD_MAP_FEATURES,
    "womd.LaneCenter.type -> PolygonType": WOMD_LANE_TYPES,
    "womd.RoadLine.type -> LineType": WOMD_ROAD_LINE_TYPES,
    "womd.RoadEdge.type -> LineType": WOMD_ROAD_EDGE_TYPES,
}


# what happens to a raw label outside a table (rendered as the table's last row)
_UNMAPPED: dict[str, str] = {
    "AgentType": "`UNKNOWN` (9), counted as a repair",
    "womd.MapFeature (oneof)": "a feature without any of these is skipped",
    "womd.LaneCenter.type": "read as `TYPE_UNDEFINED` (proto2 closed enum: unknown values read as the default)",
    "womd.RoadLine.type": "read as `TYPE_UNKNOWN` (proto2 closed enum)",
    "womd.RoadEdge.type": "read as `TYPE_UNKNOWN` (proto2 closed enum)",
}


def render_markdown() -> str:
    """The unified enums and every dataset's mapping table as Markdown (kept in sync in docs/data_format.md)."""
    out: list[str] = []
    for enum in (
        AgentType, AgentRole, PolygonType, Intersection, LineType, Side, EdgeType, SignalState, PredictionDifficulty,
    ):  # fmt: skip
        out.append(f"**{enum.__name__}**: " + ", ".join(f"{m.value} `{m.name}`" for m in enum) + "\n")
    for title, table in MAPPING_TABLES.items():
        source, target = title.split(" -> ")
        out.append(f"\n| {source} | {target} |\n|---|---|")
        out += [f"| `{label}` | `{value.name}` ({int(value)}) |" for label, value in table.items()]
        default = "scene dropped (`bad_map` / `corrupt_file`)"
        note = _UNMAPPED.get(source, _UNMAPPED.get(target, default) if target == "AgentType" else default)
        out.append(f"| anything else | {note} |")
    return "\n".join(out) + "\n"
