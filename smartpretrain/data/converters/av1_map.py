"""Argoverse 1 vector maps (``pruned_argoverse_{CITY}_{ID}_vector_map.xml``) -> per-scene :class:`MapData`.

AV1 publishes one vector map per city (MIA id 10316, PIT id 10314), not one per scenario. A user who has them
points ``map_root`` at the folder holding them; the converter then attaches, to every scene, the lanes whose
centerline passes within ``map_radius`` of the focal agent's current position. No public repository carries
these files, so AV1 must also work without them (``MapData.empty()``).

The file format and its parser (what is lenient, what is refused) are :mod:`smartpretrain.data.formats.av1`'s; a
file the parser refuses, or whose name is not in the AV1 pattern, drops every scene of its city as
:attr:`DropReason.BAD_MAP` naming the file. This module turns the parsed lanes into a city map with a topology:
predecessors / successors / neighbours that name a lane absent from the file (the maps are *pruned*) are dropped.
Parsing is done once per process: :func:`load_av1_city_maps` caches its result (or its error) by the resolved
folder path, so that converter workers parse each city once, not once per scene, and the converter object stays
small to pickle.

AV1 maps have lane centerlines only (no lane boundaries, no lane marks, no crosswalks): in the scene's
:class:`MapData` every lane is a :attr:`PolygonType.VEHICLE_LANE` polygon with exactly one polyline,
``Side.CENTER`` / ``LineType.CENTERLINE``, its points relative to the scene origin (float32; z is the node's
``height`` where the file has one, else 0 -- AV1 agents have z = 0). A lane is selected when any of its centerline
points lies within the radius (AV1 centerlines are densely sampled, ~10 points per lane).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartpretrain.data.converters.base import ConversionError, DropReason
from smartpretrain.data.formats import FormatError, av1
from smartpretrain.data.scene import MapData
from smartpretrain.data.taxonomy import EdgeType, Intersection, LineType, PolygonType, Side


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


def read_av1_city_map(path: Path | str) -> Av1CityMap:
    """Parse one ``pruned_argoverse_{CITY}_{ID}_vector_map.xml`` (no caching; see :func:`load_av1_city_maps`)."""
    path = Path(path)
    try:
        city, city_id = av1.parse_map_file_name(path)
        raw = av1.read_vector_map(path)
    except FormatError as exc:
        raise ConversionError(DropReason.BAD_MAP, exc.path, exc.detail) from None

    index = {lane_id: k for k, lane_id in enumerate(raw.lane_ids.tolist())}
    src: list[int] = []
    dst: list[int] = []
    etype: list[int] = []
    for i in range(len(index)):
        for refs_of, kind in ((raw.predecessors[i], EdgeType.PRED), (raw.successors[i], EdgeType.SUCC)):
            for other in refs_of:
                j = index.get(other)
                if j is not None:
                    src.append(j), dst.append(i), etype.append(kind)
        for other, kind in ((raw.left_neighbor[i], EdgeType.LEFT), (raw.right_neighbor[i], EdgeType.RIGHT)):
            j = index.get(other) if other is not None else None
            if j is not None:
                src.append(j), dst.append(i), etype.append(kind)

    return Av1CityMap(
        city=city,
        city_id=city_id,
        path=str(path),
        lane_ids=raw.lane_ids,
        centerline_offsets=raw.centerline_offsets,
        centerline_points=raw.centerline_points,
        is_intersection=raw.is_intersection,
        has_traffic_control=raw.has_traffic_control,
        turn_direction=raw.turn_direction,
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
