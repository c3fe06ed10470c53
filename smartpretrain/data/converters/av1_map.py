"""Argoverse 1 vector maps (``pruned_argoverse_{CITY}_{ID}_vector_map.xml``) -> per-scene :class:`MapData`.

AV1 publishes one vector map per city (MIA id 10316, PIT id 10314), not one per scenario. A user who has them
points ``map_root`` at the folder holding them; the converter then attaches, to every scene, the lanes whose
centerline passes within ``map_radius`` of the focal agent's current position. No public repository carries
these files, so AV1 must also work without them (``MapData.empty()``).

File format (one XML document per city, root element ``<ArgoverseVectorMap>``):

* ``<node id x y [height]>``: a point, referenced by id. ``height`` is optional (0 when absent).
* ``<way lane_id>``: a lane. Children ``<tag k v>`` with keys ``has_traffic_control``, ``is_intersection``
  (``"True"`` / ``"False"``), ``turn_direction`` (``NONE`` / ``LEFT`` / ``RIGHT``), ``l_neighbor_id``,
  ``r_neighbor_id`` (a lane id or ``"None"``), repeated ``predecessor`` / ``successor``; and ``<nd ref>``
  children, the lane centerline as an ordered list of node ids.

Parsing uses ``xml.etree.ElementTree.iterparse`` (bounded memory; every finished element is cleared) and is done
once per process: :func:`load_av1_city_maps` caches its result (or its error) by the resolved folder path, so
that converter workers parse each city once, not once per scene, and the converter object stays small to pickle.

Lenient where the format is: a missing boolean tag reads False, a missing ``turn_direction`` reads ``NONE``;
predecessors / successors / neighbours that name a lane absent from the file (the maps are *pruned*) are dropped.
Strict where the data would be wrong: malformed XML, a node or lane id that is not an integer, a duplicate node
or lane id, a ``<nd ref>`` to a node that does not exist, a lane without points, a boolean that is neither
``True`` nor ``False``, a non-finite coordinate or a file name not in the AV1 pattern raise
:class:`ConversionError` with :attr:`DropReason.BAD_MAP` naming the file.

AV1 maps have lane centerlines only (no lane boundaries, no lane marks, no crosswalks): in the scene's
:class:`MapData` every lane is a :attr:`PolygonType.VEHICLE_LANE` polygon with exactly one polyline,
``Side.CENTER`` / ``LineType.CENTERLINE``, its points relative to the scene origin (float32; z is the node's
``height`` where the file has one, else 0 -- AV1 agents have z = 0). A lane is selected when any of its centerline
points lies within the radius (AV1 centerlines are densely sampled, ~10 points per lane).
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartpretrain.data.converters.base import ConversionError, DropReason
from smartpretrain.data.scene import MapData
from smartpretrain.data.taxonomy import EdgeType, Intersection, LineType, PolygonType, Side

MAP_FILE_PATTERN = re.compile(r"^pruned_argoverse_([A-Za-z]+)_(\d+)_vector_map\.xml$")
# The city ids Argoverse 1 publishes; a file naming a known city with another id is rejected as mislabelled.
AV1_CITY_IDS: dict[str, int] = {"MIA": 10316, "PIT": 10314}
TURN_DIRECTIONS = ("NONE", "LEFT", "RIGHT")
_BOOLS = {"True": True, "False": False}


@dataclass
class Av1CityMap:
    """One city's lanes, in the city frame (float64), with a bounding-box index for radius queries.

    L lanes, M centerline points, E topology edges.

    Attributes:
        city: city name (``MIA``, ``PIT``), as in the CSVs' ``CITY_NAME``.
        city_id: the numeric id in the file name.
        path: the XML file this map was read from.
        lane_ids: ``[L] int64`` the ``lane_id`` of each lane, in file order.
        centerline_offsets: ``[L + 1] int64`` CSR offsets: lane ``i`` is ``centerline_points[o[i]:o[i+1]]``.
        centerline_points: ``[M, 3] float64`` x, y, height (0 where the node has no height).
        is_intersection: ``[L] bool``.
        has_traffic_control: ``[L] bool``.
        turn_direction: ``[L] str`` ``NONE`` / ``LEFT`` / ``RIGHT`` (as in the file).
        edge_index: ``[2, E] int64`` lane indices ``(src, dst)``.
        edge_type: ``[E] int8`` :class:`EdgeType`; ``(src=j, dst=i, PRED)`` reads "lane j is a predecessor of
            lane i", likewise SUCC, LEFT (j is i's left neighbour) and RIGHT.
        bbox: ``[L, 4] float64`` per-lane ``min_x, min_y, max_x, max_y`` of the centerline (the query prefilter).
    """

    city: str
    city_id: int
    path: str
    lane_ids: np.ndarray
    centerline_offsets: np.ndarray
    centerline_points: np.ndarray
    is_intersection: np.ndarray
    has_traffic_control: np.ndarray
    turn_direction: np.ndarray
    edge_index: np.ndarray
    edge_type: np.ndarray
    bbox: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        offsets = self.centerline_offsets
        xy = self.centerline_points[:, :2]
        if len(self.lane_ids):
            lo = np.minimum.reduceat(xy, offsets[:-1], axis=0)
            hi = np.maximum.reduceat(xy, offsets[:-1], axis=0)
            self.bbox = np.concatenate([lo, hi], axis=1)
        else:
            self.bbox = np.zeros((0, 4), np.float64)
        # Column copies: contiguous 1-D arrays make the per-scene prefilter a handful of fast vector ops.
        self._bx0, self._by0, self._bx1, self._by1 = (np.ascontiguousarray(self.bbox[:, k]) for k in range(4))
        self._xy = np.ascontiguousarray(xy)

    @property
    def num_lanes(self) -> int:
        return len(self.lane_ids)

    def centerline(self, lane: int) -> np.ndarray:
        """``[n, 3] float64`` centerline of lane index ``lane`` (city frame)."""
        return self.centerline_points[self.centerline_offsets[lane] : self.centerline_offsets[lane + 1]]

    def edges(self, kind: EdgeType) -> np.ndarray:
        """``[2, K]`` lane index pairs ``(src, dst)`` of one relation, e.g. ``edges(EdgeType.PRED)``."""
        return self.edge_index[:, self.edge_type == kind]

    def lane_index(self, lane_id: int) -> int:
        """Index of the lane with id ``lane_id`` (KeyError when absent)."""
        hit = np.flatnonzero(self.lane_ids == lane_id)
        if not len(hit):
            raise KeyError(lane_id)
        return int(hit[0])

    def lanes_within(self, center_xy: np.ndarray | tuple[float, float], radius: float) -> np.ndarray:
        """Indices (ascending, ``int64``) of the lanes having at least one centerline point within ``radius``.

        Two vectorised passes: lanes whose bounding box is farther than ``radius`` are discarded first (a city
        has 10k-20k lanes; a 100 m query keeps a few hundred), then the points of the remaining lanes are tested.
        """
        cx, cy = float(center_xy[0]), float(center_xy[1])
        r2 = float(radius) ** 2
        dx = np.maximum(np.maximum(self._bx0 - cx, cx - self._bx1), 0.0)
        dy = np.maximum(np.maximum(self._by0 - cy, cy - self._by1), 0.0)
        candidates = np.flatnonzero(dx * dx + dy * dy <= r2)
        if not len(candidates):
            return candidates.astype(np.int64)
        starts = self.centerline_offsets[candidates]
        lengths = self.centerline_offsets[candidates + 1] - starts
        group_start = np.zeros(len(candidates), np.int64)
        np.cumsum(lengths[:-1], out=group_start[1:])
        point_index = np.repeat(starts - group_start, lengths) + np.arange(int(lengths.sum()))
        pts = self._xy[point_index]
        inside = (pts[:, 0] - cx) ** 2 + (pts[:, 1] - cy) ** 2 <= r2
        hit = np.logical_or.reduceat(inside, group_start)
        return candidates[hit].astype(np.int64)

    def local_map(self, lanes: np.ndarray, origin: np.ndarray) -> MapData:
        """:class:`MapData` of the given lane indices relative to ``origin`` (``[3]`` float64, city frame).

        Polygons follow ``lanes``' order; each has one CENTER / CENTERLINE polyline; the topology edges are those
        of the city map whose both ends are among ``lanes``.
        """
        lanes = np.asarray(lanes, np.int64)
        starts = self.centerline_offsets[lanes]
        lengths = self.centerline_offsets[lanes + 1] - starts
        offsets = np.zeros(len(lanes) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        point_index = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]))
        points = (self.centerline_points[point_index] - np.asarray(origin, np.float64)).astype(np.float32)

        local = np.full(self.num_lanes, -1, np.int64)
        local[lanes] = np.arange(len(lanes))
        src, dst = local[self.edge_index[0]], local[self.edge_index[1]]
        keep = (src >= 0) & (dst >= 0)
        n = len(lanes)
        return MapData(
            polygon_ids=self.lane_ids[lanes].astype(np.int64),
            polygon_type=np.full(n, PolygonType.VEHICLE_LANE, np.int8),
            polygon_is_intersection=np.where(self.is_intersection[lanes], Intersection.YES, Intersection.NO).astype(
                np.int8
            ),
            polyline_polygon=np.arange(n, dtype=np.int32),
            polyline_side=np.full(n, Side.CENTER, np.int8),
            polyline_type=np.full(n, LineType.CENTERLINE, np.int8),
            polyline_offsets=offsets.astype(np.int32),
            points=points,
            edge_index=np.stack([src[keep], dst[keep]]).astype(np.int32).reshape(2, -1),
            edge_type=self.edge_type[keep].astype(np.int8),
        )

    def scene_map(self, center_xy: np.ndarray, radius: float, origin: np.ndarray) -> MapData:
        """The lanes within ``radius`` of ``center_xy`` as :class:`MapData` relative to ``origin``."""
        return self.local_map(self.lanes_within(center_xy, radius), origin)


def parse_map_file_name(path: Path | str) -> tuple[str, int]:
    """``(city, city_id)`` from ``pruned_argoverse_{CITY}_{ID}_vector_map.xml``; BAD_MAP when it does not match."""
    path = Path(path)
    match = MAP_FILE_PATTERN.match(path.name)
    if match is None:
        raise ConversionError(DropReason.BAD_MAP, path, "file name is not pruned_argoverse_{CITY}_{ID}_vector_map.xml")
    city, city_id = match.group(1), int(match.group(2))
    expected = AV1_CITY_IDS.get(city)
    if expected is not None and expected != city_id:
        raise ConversionError(DropReason.BAD_MAP, path, f"city {city} has map id {expected}, file says {city_id}")
    return city, city_id


def _bool(value: str | None, key: str, lane_id: int, path: Path) -> bool:
    if value is None:
        return False
    try:
        return _BOOLS[value]
    except KeyError:
        raise ConversionError(
            DropReason.BAD_MAP, path, f"lane {lane_id}: {key}={value!r} is neither 'True' nor 'False'"
        ) from None


def _lane_ref(value: str | None, key: str, lane_id: int, path: Path) -> int | None:
    if value is None or value == "None" or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConversionError(DropReason.BAD_MAP, path, f"lane {lane_id}: {key}={value!r} is not a lane id") from None


def read_av1_city_map(path: Path | str) -> Av1CityMap:
    """Parse one ``pruned_argoverse_{CITY}_{ID}_vector_map.xml`` (no caching; see :func:`load_av1_city_maps`)."""
    path = Path(path)
    city, city_id = parse_map_file_name(path)

    node_ids: list[int] = []
    node_xyz: list[tuple[float, float, float]] = []
    lane_ids: list[int] = []
    lane_refs: list[int] = []
    lane_num_points: list[int] = []
    is_intersection: list[bool] = []
    traffic_control: list[bool] = []
    turn: list[str] = []
    relations: list[tuple[list[int], list[int], int | None, int | None]] = []

    def bad(message: str) -> ConversionError:
        return ConversionError(DropReason.BAD_MAP, path, message)

    try:
        root: ET.Element | None = None
        for event, elem in ET.iterparse(path, events=("start", "end")):
            if root is None:
                root = elem
                if elem.tag != "ArgoverseVectorMap":
                    raise bad(f"root element is <{elem.tag}>, expected <ArgoverseVectorMap>")
                continue
            if event != "end":
                continue
            tag = elem.tag
            if tag == "node":
                attrib = elem.attrib
                try:
                    node_ids.append(int(attrib["id"]))
                    height = attrib.get("height")
                    node_xyz.append((float(attrib["x"]), float(attrib["y"]), float(height) if height else 0.0))
                except (KeyError, ValueError) as exc:
                    raise bad(f"malformed <node {dict(attrib)}>: {exc!r}") from None
                root.clear()
            elif tag == "way":
                raw_id = elem.get("lane_id")
                try:
                    lane_id = int(raw_id)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise bad(f"<way> has lane_id={raw_id!r}, not an integer") from None
                tags: dict[str, str] = {}
                preds: list[int] = []
                succs: list[int] = []
                count = 0
                for child in elem:
                    if child.tag == "nd":
                        try:
                            lane_refs.append(int(child.attrib["ref"]))
                        except (KeyError, ValueError):
                            raise bad(f"lane {lane_id}: malformed <nd {dict(child.attrib)}>") from None
                        count += 1
                    elif child.tag == "tag":
                        k, v = child.get("k"), child.get("v")
                        if k is None or v is None:
                            raise bad(f"lane {lane_id}: <tag> without k or v")
                        if k == "predecessor" or k == "successor":
                            ref = _lane_ref(v, k, lane_id, path)
                            if ref is not None:
                                (preds if k == "predecessor" else succs).append(ref)
                        else:
                            tags[k] = v
                if count == 0:
                    raise bad(f"lane {lane_id} has no <nd> points")
                lane_ids.append(lane_id)
                lane_num_points.append(count)
                is_intersection.append(_bool(tags.get("is_intersection"), "is_intersection", lane_id, path))
                traffic_control.append(_bool(tags.get("has_traffic_control"), "has_traffic_control", lane_id, path))
                direction = tags.get("turn_direction", "NONE")
                turn.append(direction)
                left = _lane_ref(tags.get("l_neighbor_id"), "l_neighbor_id", lane_id, path)
                right = _lane_ref(tags.get("r_neighbor_id"), "r_neighbor_id", lane_id, path)
                relations.append((preds, succs, left, right))
                root.clear()
    except ET.ParseError as exc:
        raise bad(f"malformed XML: {exc}") from None
    except OSError as exc:
        raise bad(f"cannot read map file: {exc}") from None

    # Nodes -> arrays; resolve every <nd ref> at once with a sorted-id search.
    ids = np.asarray(node_ids, np.int64)
    xyz = np.asarray(node_xyz, np.float64).reshape(-1, 3)
    if not np.isfinite(xyz).all():
        raise bad("NaN/inf node coordinates")
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if len(sorted_ids) > 1 and (sorted_ids[1:] == sorted_ids[:-1]).any():
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0]
        raise bad(f"duplicate node id {int(dup)}")
    refs = np.asarray(lane_refs, np.int64)
    pos = np.searchsorted(sorted_ids, refs)
    found = pos < len(sorted_ids)
    found[found] = sorted_ids[pos[found]] == refs[found]
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        lane_of_ref = int(np.searchsorted(np.cumsum(lane_num_points), k, side="right"))
        raise bad(f"lane {lane_ids[lane_of_ref]}: <nd ref={int(refs[k])}> names no <node>")
    points = xyz[order[pos]] if len(refs) else np.zeros((0, 3), np.float64)
    offsets = np.zeros(len(lane_ids) + 1, np.int64)
    np.cumsum(lane_num_points, out=offsets[1:])

    index: dict[int, int] = {}
    for k, lane_id in enumerate(lane_ids):
        if lane_id in index:
            raise bad(f"duplicate lane_id {lane_id}")
        index[lane_id] = k
    src: list[int] = []
    dst: list[int] = []
    etype: list[int] = []
    for i, (preds, succs, left, right) in enumerate(relations):
        for refs_of, kind in ((preds, EdgeType.PRED), (succs, EdgeType.SUCC)):
            for other in refs_of:
                j = index.get(other)
                if j is not None:
                    src.append(j), dst.append(i), etype.append(kind)
        for other, kind in ((left, EdgeType.LEFT), (right, EdgeType.RIGHT)):
            j = index.get(other) if other is not None else None
            if j is not None:
                src.append(j), dst.append(i), etype.append(kind)

    return Av1CityMap(
        city=city,
        city_id=city_id,
        path=str(path),
        lane_ids=np.asarray(lane_ids, np.int64),
        centerline_offsets=offsets,
        centerline_points=points,
        is_intersection=np.asarray(is_intersection, bool),
        has_traffic_control=np.asarray(traffic_control, bool),
        turn_direction=np.asarray(turn, dtype=str) if turn else np.zeros(0, dtype="<U5"),
        edge_index=np.asarray([src, dst], np.int64).reshape(2, -1),
        edge_type=np.asarray(etype, np.int8),
    )


_CACHE: dict[str, dict[str, Av1CityMap] | ConversionError] = {}
_CACHE_LOCK = threading.Lock()


def load_av1_city_maps(map_root: Path | str) -> dict[str, Av1CityMap]:
    """All city maps in ``map_root`` keyed by city name; parsed once per process and cached by resolved path.

    Only ``*.xml`` files are considered (the AV1 ``map_files`` folder also holds ``.npy`` / ``.json`` rasters,
    which are ignored); each must match the AV1 file-name pattern. A failure is cached too, so a broken map
    folder costs one parse, and re-raised (as a fresh :class:`ConversionError`) on every later call.
    """
    root = Path(map_root)
    key = str(root.resolve())
    cached = _CACHE.get(key)
    if cached is None:
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is None:
                try:
                    cached = _load_uncached(root)
                except ConversionError as exc:
                    cached = exc
                _CACHE[key] = cached
    if isinstance(cached, ConversionError):
        raise ConversionError(cached.reason, cached.path, cached.detail)
    return cached


def clear_av1_map_cache() -> None:
    """Forget every parsed map (tests; a process whose map files changed on disk)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _load_uncached(root: Path) -> dict[str, Av1CityMap]:
    if not root.is_dir():
        raise ConversionError(DropReason.BAD_MAP, root, "map_root is not a folder")
    maps: dict[str, Av1CityMap] = {}
    for path in sorted(root.glob("*.xml")):
        city_map = read_av1_city_map(path)
        if city_map.city in maps:
            first = maps[city_map.city].path
            message = f"second vector map for city {city_map.city} (first: {first})"
            raise ConversionError(DropReason.BAD_MAP, path, message)
        maps[city_map.city] = city_map
    return maps
