"""TFRecord reading and writing without TensorFlow: checksums, round trips, truncation, corruption, real WOMD files."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import crc32c
import pytest

from smartpretrain.data import tfrecord
from smartpretrain.data.tfrecord import (
    TFRecordError,
    encode_record,
    index_records,
    iter_records,
    iter_records_with_offsets,
    masked_crc32c,
    read_record_at,
    write_records,
)
from smartpretrain.io.atomic import host_name, temp_owner

WOMD_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "womd"

RECORDS = [b"first record", b"", b"x" * 1000, os.urandom(1 << 20), b"last"]
SMALL = [b"hello", b"", b"0123456789"]  # the 3-record file cut at every byte position


def _womd(name: str) -> Path:
    path = WOMD_FIXTURES / name
    if not path.exists():
        pytest.skip(
            f"../shared/fixtures/womd not found: {path} (the shared WOMD fixtures are not beside this checkout)"
        )
    return path


def _read_until_error(path: Path, **kwargs: object) -> tuple[list[bytes], TFRecordError | None]:
    """Consume the iterator record by record; the records read before the error, and the error."""
    got: list[bytes] = []
    try:
        for record in iter_records(path, **kwargs):  # type: ignore[arg-type]
            got.append(record)
    except TFRecordError as exc:
        return got, exc
    return got, None


def _offsets(records: list[bytes]) -> list[int]:
    offsets, pos = [], 0
    for r in records:
        offsets.append(pos)
        pos += 12 + len(r) + 4
    return offsets


# --------------------------------------------------------------------------------------------------- checksums


def test_crc32c_known_vector() -> None:
    assert crc32c.crc32c(b"123456789") == 0xE3069283


def test_masked_crc32c_formula_by_hand() -> None:
    # crc = 0xE3069283; crc >> 15 = 0x1C60D; (crc << 17) mod 2**32 = 0x1283 << 17 = 0x25060000 (low 15 bits moved
    # to the top); rotated = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5 (mod 2**32, no carry out here).
    assert masked_crc32c(b"123456789") == 0xC78AB0E5
    assert masked_crc32c(memoryview(b"123456789")) == 0xC78AB0E5
    # a value where the addition wraps around 2**32: the mask must reduce it
    crc = crc32c.crc32c(b"")
    assert crc == 0
    assert masked_crc32c(b"") == 0xA282EAD8
    crc = crc32c.crc32c(b"a")
    expected = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"a") == expected and expected < 2**32


def test_masked_crc32c_matches_a_tensorflow_written_header() -> None:
    # First 12 bytes of motion_data_one_example.tfrecord (written by TensorFlow): length 0x120cb8, its masked CRC.
    header = bytes.fromhex("b80c1200000000002bf14f6b")
    assert masked_crc32c(header[:8]) == struct.unpack("<I", header[8:])[0] == 0x6B4FF12B


def test_encode_record_framing() -> None:
    framed = encode_record(b"abc")
    assert len(framed) == 12 + 3 + 4
    assert framed[:8] == struct.pack("<Q", 3)
    assert framed[8:12] == struct.pack("<I", masked_crc32c(framed[:8]))
    assert framed[12:15] == b"abc"
    assert framed[15:] == struct.pack("<I", masked_crc32c(b"abc"))


# --------------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_round_trip(tmp_path: Path, compression: str) -> None:
    path = tmp_path / "data.tfrecord"
    assert write_records(path, iter(RECORDS), compression=compression) == len(RECORDS)  # type: ignore[arg-type]
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (compression == "gzip")
    assert list(iter_records(path, compression=compression)) == RECORDS  # type: ignore[arg-type]
    assert list(iter_records(str(path))) == RECORDS  # "auto" detects the compression
    with_offsets = list(iter_records_with_offsets(path))
    assert [r for _, r in with_offsets] == RECORDS
    assert [o for o, _ in with_offsets] == _offsets(RECORDS)
    index = index_records(path)
    assert index == [(o, len(r)) for o, r in with_offsets]
    for offset, record in with_offsets:
        assert read_record_at(path, offset) == record
    if compression == "none":
        assert path.read_bytes() == b"".join(encode_record(r) for r in RECORDS)
    else:
        assert gzip.decompress(path.read_bytes()) == b"".join(encode_record(r) for r in RECORDS)


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_empty_file_and_no_records(tmp_path: Path, compression: str) -> None:
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    assert list(iter_records(empty, compression=compression)) == []  # type: ignore[arg-type]
    assert index_records(empty, compression=compression) == []  # type: ignore[arg-type]
    none = tmp_path / "none.tfrecord"
    assert write_records(none, [], compression=compression) == 0  # type: ignore[arg-type]
    assert list(iter_records(none)) == [] and index_records(none) == []
    with pytest.raises(TFRecordError, match="no record at this offset"):
        read_record_at(none, 0)


def test_gzip_file_read_as_uncompressed_hints_at_gzip(tmp_path: Path) -> None:
    path = tmp_path / "data.tfrecord.gz"
    write_records(path, SMALL, compression="gzip")
    with pytest.raises(TFRecordError, match=r"not a TFRecord file.*compression='gzip'") as info:
        list(iter_records(path, compression="none"))
    assert info.value.offset == 0 and "data.tfrecord.gz: byte 0:" in str(info.value)


def test_not_a_tfrecord_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is a plain text file, not a TFRecord file\n")
    for read in (lambda: list(iter_records(path)), lambda: index_records(path)):
        with pytest.raises(TFRecordError, match=r"length field CRC mismatch.*not a TFRecord file"):
            read()


def test_read_record_at_bad_offsets(tmp_path: Path) -> None:
    path = tmp_path / "data.tfrecord"
    write_records(path, SMALL)
    with pytest.raises(TFRecordError, match="length field CRC mismatch") as info:
        read_record_at(path, 3)  # not the start of a record
    assert info.value.offset == 3
    size = path.stat().st_size
    with pytest.raises(TFRecordError, match="offset beyond"):
        read_record_at(path, size + 10)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        read_record_at(path, -1)
    gz = tmp_path / "data.tfrecord.gz"
    write_records(gz, SMALL, compression="gzip")
    assert read_record_at(gz, _offsets(SMALL)[2]) == SMALL[2]
    with pytest.raises(TFRecordError, match="offset beyond the end of decompressed stream"):
        read_record_at(gz, size + 10)


# --------------------------------------------------------------------------------------------------- truncation


def _expected_cut(cut: int) -> tuple[int, int | None]:
    """Number of complete records before byte ``cut`` of the SMALL file, and the offset of the cut record."""
    offsets = _offsets(SMALL)
    ends = [o + 12 + len(r) + 4 for o, r in zip(offsets, SMALL, strict=True)]
    complete = sum(1 for end in ends if end <= cut)
    if complete == len(SMALL) or offsets[complete] == cut:
        return complete, None  # the cut is at a record boundary: a valid shorter file
    return complete, offsets[complete]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_truncated_files(tmp_path: Path, compression: str) -> None:
    full = b"".join(encode_record(r) for r in SMALL)
    assert len(full) == 3 * 16 + 15
    errors = 0
    for cut in range(len(full)):
        path = tmp_path / f"cut_{cut:03d}.tfrecord"
        payload = full[:cut]
        path.write_bytes(gzip.compress(payload) if compression == "gzip" else payload)
        complete, bad_offset = _expected_cut(cut)
        got, exc = _read_until_error(path)
        assert got == SMALL[:complete], cut
        if bad_offset is None:
            assert exc is None, (cut, exc)
            assert [o for o, _ in index_records(path)] == _offsets(SMALL)[:complete]
            continue
        errors += 1
        assert exc is not None, cut
        assert exc.offset == bad_offset and exc.path == str(path)
        assert str(exc).startswith(f"{path}: byte {bad_offset}: truncated record"), str(exc)
        assert path.name in str(exc) and f"byte {bad_offset}" in str(exc)
        within = cut - bad_offset
        length = len(SMALL[complete])
        if within < 12:
            assert f"truncated record header: {within} of 12 bytes" in exc.detail
        elif within < 12 + length:
            assert f"header says {length} data bytes" in exc.detail and f"after {within - 12}" in exc.detail
        else:
            assert f"data CRC cut off, {within - 12 - length} of 4 bytes" in exc.detail
        with pytest.raises(TFRecordError) as info:
            index_records(path)
        assert info.value.offset == bad_offset and info.value.detail == exc.detail
        with pytest.raises(TFRecordError) as info:
            read_record_at(path, bad_offset)
        assert info.value.offset == bad_offset
    assert errors == len(full) - 3  # every position but the 3 record boundaries (0, 21, 37) is an error


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_huge_bogus_length_is_a_truncation_not_an_allocation(tmp_path: Path, compression: str) -> None:
    # A header with a valid CRC claiming 2**62 data bytes: must fail as truncated, never try to allocate 4 EiB.
    length = struct.pack("<Q", 2**62)
    payload = encode_record(b"ok") + length + struct.pack("<I", masked_crc32c(length)) + b"some bytes"
    path = tmp_path / "bogus.tfrecord"
    path.write_bytes(gzip.compress(payload) if compression == "gzip" else payload)
    got, exc = _read_until_error(path)
    assert got == [b"ok"]
    assert exc is not None and exc.offset == 18
    assert f"header says {2**62} data bytes" in exc.detail and "after 10" in exc.detail


# --------------------------------------------------------------------------------------------------- corruption


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_data_byte(tmp_path: Path) -> None:
    path = tmp_path / "data.tfrecord"
    write_records(path, SMALL)
    offsets = _offsets(SMALL)
    _flip(path, offsets[2] + 12 + 4)  # a data byte of the third record
    got, exc = _read_until_error(path)
    assert got == SMALL[:2]
    assert exc is not None and exc.offset == offsets[2]
    assert f"{path}: byte {offsets[2]}: data CRC mismatch (corrupt record of 10 bytes)" == str(exc)
    with pytest.raises(TFRecordError, match="data CRC mismatch"):
        read_record_at(path, offsets[2])
    # index_records reads only the headers: it does not see a corrupt data byte (documented).
    assert index_records(path) == [(o, len(r)) for o, r in zip(offsets, SMALL, strict=True)]
    altered = list(iter_records(path, verify_crc=False))
    assert altered[:2] == SMALL[:2] and altered[2] != SMALL[2]
    assert altered[2] == b"0123" + bytes([ord("4") ^ 0x40]) + b"56789"
    assert read_record_at(path, offsets[2], verify_crc=False) == altered[2]


def test_flipped_data_crc_byte(tmp_path: Path) -> None:
    path = tmp_path / "data.tfrecord"
    write_records(path, SMALL)
    offsets = _offsets(SMALL)
    _flip(path, offsets[1] + 12 + 0 + 2)  # the data CRC of the empty second record
    got, exc = _read_until_error(path)
    assert got == SMALL[:1] and exc is not None and exc.offset == offsets[1]
    assert "data CRC mismatch" in exc.detail
    assert list(iter_records(path, verify_crc=False)) == SMALL


@pytest.mark.parametrize("position", [0, 3, 7, 8, 11], ids=["len0", "len3", "len7", "crc0", "crc3"])
def test_flipped_length_byte(tmp_path: Path, position: int) -> None:
    path = tmp_path / "data.tfrecord"
    write_records(path, SMALL)
    offsets = _offsets(SMALL)
    _flip(path, offsets[1] + position)  # header of the second record: length or its CRC
    got, exc = _read_until_error(path)
    assert got == SMALL[:1]
    assert exc is not None and exc.offset == offsets[1] and exc.path == str(path)
    assert exc.detail == "length field CRC mismatch (corrupt record header)"  # no "not a TFRecord" hint past byte 0
    with pytest.raises(TFRecordError, match="length field CRC mismatch") as info:
        index_records(path)
    assert info.value.offset == offsets[1]


def test_flipped_first_header_hints_not_a_tfrecord(tmp_path: Path) -> None:
    path = tmp_path / "data.tfrecord"
    write_records(path, SMALL)
    _flip(path, 2)
    got, exc = _read_until_error(path)
    assert got == [] and exc is not None and exc.offset == 0
    assert "length field CRC mismatch" in exc.detail and "not a TFRecord file?" in exc.detail


@pytest.mark.parametrize("keep", [1, 5, 10, 20, 0.5, 0.9, -8, -1])
def test_corrupt_gzip_stream_truncated(tmp_path: Path, keep: float) -> None:
    source = tmp_path / "full.tfrecord.gz"
    write_records(source, [*RECORDS[:3], os.urandom(50_000)], compression="gzip")
    data = source.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (keep if keep > 0 else len(data) + keep)
    path = tmp_path / "cut.tfrecord.gz"
    path.write_bytes(data[:cut])
    with pytest.raises(TFRecordError) as info:
        list(iter_records(path, compression="gzip"))
    assert path.name in str(info.value) and info.value.path == str(path)
    with pytest.raises(TFRecordError) as info:
        index_records(path, compression="gzip")
    assert path.name in str(info.value)


def test_corrupt_gzip_stream_garbage(tmp_path: Path) -> None:
    source = tmp_path / "full.tfrecord.gz"
    write_records(source, [os.urandom(20_000) for _ in range(3)], compression="gzip")
    data = bytearray(source.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    path = tmp_path / "garbage.tfrecord.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(TFRecordError) as info:
        list(iter_records(path))
    assert str(info.value).startswith(f"{path}: byte ")
    truncated = tmp_path / "truncated.tfrecord.gz"
    truncated.write_bytes(source.read_bytes()[:-8])  # the gzip trailer (CRC-32 and size) is cut off
    with pytest.raises(TFRecordError, match="corrupt or truncated gzip stream"):
        list(iter_records(truncated))


def test_error_pickles_and_is_a_value_error() -> None:
    exc = TFRecordError("a/b.tfrecord", 42, "data CRC mismatch (corrupt record of 7 bytes)")
    assert isinstance(exc, ValueError)
    assert str(exc) == "a/b.tfrecord: byte 42: data CRC mismatch (corrupt record of 7 bytes)"
    clone = pickle.loads(pickle.dumps(exc))
    assert (clone.path, clone.offset, clone.detail, str(clone)) == (exc.path, exc.offset, exc.detail, str(exc))


def test_bad_compression_argument(tmp_path: Path) -> None:
    path = tmp_path / "data.tfrecord"
    write_records(path, SMALL)
    with pytest.raises(ValueError, match="compression must be"):
        list(iter_records(path, compression="zstd"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compression must be"):
        write_records(path, SMALL, compression="auto")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_write_replaces_atomically_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    path = tmp_path / "out.tfrecord"
    path.write_bytes(b"old content that is not a TFRecord file")
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((os.fspath(src), os.fspath(dst)))
        assert Path(src).exists() and Path(src).parent == path.parent
        real_replace(src, dst)

    monkeypatch.setattr(tfrecord.os, "replace", spy_replace)
    assert write_records(str(path), SMALL, compression=compression) == 3  # type: ignore[arg-type]
    # the one temp scheme of smartpretrain.io.atomic: ".{name}.tmp.{host}.{pid}.{random}" beside the target
    assert len(renames) == 1 and renames[0][1] == str(path)
    assert Path(renames[0][0]).name.startswith(".out.tfrecord.tmp.")
    assert temp_owner(Path(renames[0][0]).name) == (host_name(), os.getpid())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tfrecord"]
    assert list(iter_records(path)) == SMALL


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.tfrecord"
    write_records(path, SMALL)
    before = path.read_bytes()

    def failing():
        yield b"one"
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        write_records(path, failing())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tfrecord"]


# --------------------------------------------------------------------------------------------------- real WOMD files


def test_womd_one_scenario() -> None:
    path = _womd("motion_data_one_scenario.tfrecord")
    with_offsets = list(iter_records_with_offsets(path, verify_crc=True))
    assert len(with_offsets) == 1
    offset, record = with_offsets[0]
    assert offset == 0 and 12 + len(record) + 4 == path.stat().st_size
    assert index_records(path, verify_crc=True) == [(0, len(record))]
    assert read_record_at(path, 0) == record


def test_womd_one_example() -> None:
    path = _womd("motion_data_one_example.tfrecord")
    with_offsets = list(iter_records_with_offsets(path, verify_crc=True))
    assert len(with_offsets) >= 1
    index = index_records(path, verify_crc=True)
    assert index == [(o, len(r)) for o, r in with_offsets]
    last_offset, last_length = index[-1]
    assert last_offset + 12 + last_length + 4 == path.stat().st_size
    for offset, record in with_offsets:
        assert read_record_at(path, offset) == record


def test_womd_gzip_copy_round_trip(tmp_path: Path) -> None:
    records = list(iter_records(_womd("motion_data_one_scenario.tfrecord")))
    path = tmp_path / "scenario.tfrecord.gz"
    write_records(path, records, compression="gzip")
    assert list(iter_records(path)) == records
    assert index_records(path) == [(0, len(records[0]))]
