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
# Raw label -> unified enum, per dataset. Unknown raw labels map to AgentType.UNKNOWN and are counted by converters.

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
}


def lookup(table: dict[str, IntEnum], label: str, default: IntEnum) -> tuple[IntEnum, bool]:
    """Map ``label`` through ``table``; returns ``(value, known)`` so callers can count unknown labels."""
    value = table.get(label)
    return (default, False) if value is None else (value, True)


def render_markdown() -> str:
    """The unified enums and every dataset's mapping table as Markdown (kept in sync in docs/data_format.md)."""
    out: list[str] = []
    for enum in (AgentType, AgentRole, PolygonType, Intersection, LineType, Side, EdgeType):
        out.append(f"**{enum.__name__}**: " + ", ".join(f"{m.value} `{m.name}`" for m in enum) + "\n")
    for title, table in MAPPING_TABLES.items():
        source, target = title.split(" -> ")
        out.append(f"\n| {source} | {target} |\n|---|---|")
        out += [f"| `{label}` | `{value.name}` ({int(value)}) |" for label, value in table.items()]
        out.append(
            "| anything else | "
            + (
                "`UNKNOWN` (9), counted as a repair |"
                if target == "AgentType"
                else "scene dropped (`bad_map` / `corrupt_file`) |"
            )
        )
    return "\n".join(out) + "\n"
