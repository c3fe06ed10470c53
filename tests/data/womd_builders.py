"""Build WOMD ``Scenario`` messages and re-encode them at the wire level (packed fields, field order, unknowns)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from smartpretrain.data.protos import womd_message

Scenario = womd_message("Scenario")


def make_scenario(scenario_id: str = "synthetic-0", num_tracks: int = 6, num_steps: int = 91, seed: int = 0) -> Any:
    """A small, valid Scenario: moving tracks, 2 to predict, sdc, every map feature kind, signal states."""
    rng = np.random.default_rng(seed)
    s = Scenario()
    s.scenario_id = scenario_id
    s.current_time_index = 10
    s.timestamps_seconds.extend([0.1 * t for t in range(num_steps)])
    for i in range(num_tracks):
        track = s.tracks.add()
        track.id = 100 + i
        track.object_type = [1, 2, 3, 4][i % 4]
        x0, y0 = rng.uniform(-30, 30, 2) + np.array([1000.0, -2000.0])
        vx, vy = rng.uniform(-5, 5, 2)
        for t in range(num_steps):
            st = track.states.add()
            st.valid = not (i == num_tracks - 1 and t < 20)  # the last track appears late
            if st.valid:
                st.center_x, st.center_y, st.center_z = x0 + vx * 0.1 * t, y0 + vy * 0.1 * t, 5.0 + 0.01 * t
                st.length, st.width, st.height = 4.5, 2.0, 1.6
                st.heading = float(np.arctan2(vy, vx))
                st.velocity_x, st.velocity_y = vx, vy
    s.sdc_track_index = 0
    for index, difficulty in ((1, 1), (2, 2)):
        req = s.tracks_to_predict.add()
        req.track_index, req.difficulty = index, difficulty
    s.objects_of_interest.extend([101, 102])

    def line(feature: Any, n: int, dx: float = 1.0, y: float = 0.0) -> None:
        for k in range(n):
            p = feature.add()
            p.x, p.y, p.z = 1000.0 + dx * k, -2000.0 + y, 5.0

    lane_a = s.map_features.add()
    lane_a.id = 1
    lane_a.lane.type = 2
    line(lane_a.lane.polyline, 8)
    lane_a.lane.exit_lanes.append(2)
    nb = lane_a.lane.left_neighbors.add()
    nb.feature_id = 3
    lane_b = s.map_features.add()
    lane_b.id = 2
    lane_b.lane.type = 3
    line(lane_b.lane.polyline, 5, y=0.0)
    lane_b.lane.entry_lanes.extend([1, 999])  # 999 is not in the scenario: dropped
    lane_c = s.map_features.add()
    lane_c.id = 3
    lane_c.lane.type = 1
    line(lane_c.lane.polyline, 6, y=3.5)
    road_line = s.map_features.add()
    road_line.id = 10
    road_line.road_line.type = 8
    line(road_line.road_line.polyline, 4, y=1.75)
    road_edge = s.map_features.add()
    road_edge.id = 11
    road_edge.road_edge.type = 2
    line(road_edge.road_edge.polyline, 3, y=-2.0)
    stop = s.map_features.add()
    stop.id = 12
    stop.stop_sign.lane.extend([1, 2])
    stop.stop_sign.position.x, stop.stop_sign.position.y = 1007.0, -2001.0
    crosswalk = s.map_features.add()
    crosswalk.id = 13
    for x, y in ((0, 0), (10, 0), (10, 3), (0, 3)):
        p = crosswalk.crosswalk.polygon.add()
        p.x, p.y = 1000.0 + x, -2000.0 + y
    bump = s.map_features.add()
    bump.id = 14
    for x, y in ((0, 0), (1, 0), (1, 4), (0, 4), (-0.5, 2)):
        p = bump.speed_bump.polygon.add()
        p.x, p.y = 1020.0 + x, -2000.0 + y
    drive = s.map_features.add()
    drive.id = 15
    for x, y in ((0, 0), (2, 0), (2, 2)):
        p = drive.driveway.polygon.add()
        p.x, p.y = 1030.0 + x, -2010.0 + y
    for t in range(num_steps):
        dms = s.dynamic_map_states.add()
        ls = dms.lane_states.add()
        ls.lane = 1
        ls.state = 6 if t < 50 else 4
        ls.stop_point.x, ls.stop_point.y, ls.stop_point.z = 1007.0, -2000.0, 5.0
    return s


# --- wire level -------------------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def split_fields(buf: bytes) -> list[tuple[int, int, bytes]]:
    """``(field number, wire type, raw bytes of the whole field incl. its key)`` in wire order."""
    out, pos = [], 0
    while pos < len(buf):
        start = pos
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(wire)
        out.append((number, wire, buf[start:pos]))
    return out


def payload(raw_field: bytes) -> bytes:
    """The content of a length-delimited field."""
    _, pos = read_varint(raw_field, 0)
    size, pos = read_varint(raw_field, pos)
    return raw_field[pos : pos + size]


def length_delimited(number: int, content: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(content)) + content


def pack_doubles(buf: bytes, number: int) -> bytes:
    """Re-encode unpacked repeated double ``number`` (wire type 1) as one packed field, in place of the first."""
    fields = split_fields(buf)
    values = b"".join(raw[-8:] for n, w, raw in fields if n == number and w == 1)
    out, done = [], False
    for n, w, raw in fields:
        if n == number and w == 1:
            if not done:
                out.append(length_delimited(number, values))
                done = True
            continue
        out.append(raw)
    return b"".join(out)


def pack_varints(buf: bytes, number: int) -> bytes:
    """Re-encode unpacked repeated varint field ``number`` as one packed field."""
    fields = split_fields(buf)
    values = b""
    for n, w, raw in fields:
        if n == number and w == 0:
            _, pos = read_varint(raw, 0)
            values += raw[pos:]
    out, done = [], False
    for n, w, raw in fields:
        if n == number and w == 0:
            if not done:
                out.append(length_delimited(number, values))
                done = True
            continue
        out.append(raw)
    return b"".join(out)


def shuffle_fields(buf: bytes, seed: int) -> bytes:
    """Reorder the fields: distinct field numbers in a random order, each number's occurrences kept in order."""
    fields = split_fields(buf)
    numbers = sorted({n for n, _, _ in fields})
    rank = {n: r for r, n in enumerate(np.random.default_rng(seed).permutation(numbers))}
    return b"".join(raw for _, _, raw in sorted(fields, key=lambda f: rank[f[0]]))


def unknown_fields() -> bytes:
    """Fields with numbers no message of the schema declares, of every wire type."""
    return (
        varint(97 << 3 | 0)
        + varint(123456789)
        + varint(98 << 3 | 1)
        + struct.pack("<d", 1.5)
        + length_delimited(99, b"\x08\x01unknown payload")
        + varint(96 << 3 | 5)
        + struct.pack("<f", 2.5)
        + length_delimited(12, b"lidar frame bytes")  # compressed_frame_laser_data: ignorable
    )


def map_field(buf: bytes, number: int, fn: Any) -> bytes:
    """Apply ``fn`` to the content of every length-delimited field ``number`` (a sub-message) and re-frame it."""
    out = []
    for n, w, raw in split_fields(buf):
        out.append(length_delimited(number, fn(payload(raw))) if (n, w) == (number, 2) else raw)
    return b"".join(out)


def tf_example_record(names: tuple[str, ...] = ("state/current/x", "scenario/id")) -> bytes:
    """A ``tf.train.Example`` with float features of the given names (the older WOMD format)."""
    entries = b""
    for name in names:
        float_list = length_delimited(1, struct.pack("<f", 1.0))  # FloatList.value packed
        feature = length_delimited(2, float_list)  # Feature.float_list
        entry = length_delimited(1, name.encode()) + length_delimited(2, feature)
        entries += length_delimited(1, entry)  # Features.feature map entry
    return length_delimited(1, entries)  # Example.features
