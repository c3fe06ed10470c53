"""TFRecord files (the container of the Waymo Open Motion Dataset), read and written in plain Python.

Why no TensorFlow: the format is a trivial length-prefixed framing with CRC-32C checksums, and the WOMD scenarios
inside are protobuf messages that do not need TensorFlow either. Importing TensorFlow for this would add a
multi-gigabyte dependency, pin NumPy/CUDA versions against PyTorch's, slow down every worker process at start-up and
make conversion workers fork a TF runtime. This module needs only the standard library and the ``crc32c`` package
(a C implementation of CRC-32C; the pure Python alternative would be about 1000 times slower).

Framing (all integers little-endian), one record after another, nothing before, between or after them::

    uint64 length | uint32 masked_crc32c(the 8 length bytes) | data[length] | uint32 masked_crc32c(data)

    masked_crc32c(x) = (((crc >> 15) | (crc << 17)) + 0xa282ead8) mod 2**32,  crc = CRC-32C (Castagnoli) of x

Some distributions gzip the whole stream (``.tfrecord.gz`` / TF's ``compression_type="GZIP"``); byte offsets of
records in such files are offsets in the decompressed stream. Every malformed input raises :class:`TFRecordError`
naming the file and the byte offset of the record that is bad; reading is streamed with buffered file objects, never
the whole file at once.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Literal, TypeAlias

import crc32c as _crc32c

from smartpretrain.io.atomic import atomic_output

__all__ = [
    "Compression",
    "TFRecordError",
    "encode_record",
    "index_records",
    "iter_records",
    "iter_records_with_offsets",
    "masked_crc32c",
    "read_record_at",
    "write_records",
]

StrPath: TypeAlias = str | os.PathLike[str]
Compression = Literal["auto", "gzip", "none"]

HEADER_SIZE = 12  # uint64 length + uint32 masked CRC of the length bytes
FOOTER_SIZE = 4  # uint32 masked CRC of the data
GZIP_MAGIC = b"\x1f\x8b"
_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<QI")
# Longest single read: a corrupt length field (read with verify_crc=False) then costs at most the actual
# remaining stream in memory, never an allocation of the bogus size.
_READ_CHUNK = 64 << 20
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


class TFRecordError(ValueError):
    """A malformed TFRecord file: ``str(exc) == f"{path}: byte {offset}: {detail}"``.

    ``offset`` is the byte offset of the start (the header) of the bad record, in the decompressed stream for gzip
    files.
    """

    def __init__(self, path: str, offset: int, detail: str) -> None:
        self.path = path
        self.offset = offset
        self.detail = detail
        super().__init__(f"{path}: byte {offset}: {detail}")

    def __reduce__(self) -> tuple[type[TFRecordError], tuple[str, int, str]]:
        # Exceptions with a custom __init__ do not unpickle by default (DataLoader workers pickle them).
        return (type(self), (self.path, self.offset, self.detail))


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The TFRecord checksum of ``data``: ``(((crc >> 15) | (crc << 17)) + 0xa282ead8) mod 2**32``, crc = CRC-32C."""
    crc = _crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(data: bytes | bytearray | memoryview) -> bytes:
    """One framed record: ``uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)``."""
    length = _LENGTH.pack(len(data))
    return b"".join((length, _CRC.pack(masked_crc32c(length)), bytes(data), _CRC.pack(masked_crc32c(data))))


# --------------------------------------------------------------------------------------------------- reading


def _resolve_compression(path: str, compression: str) -> Literal["gzip", "none"]:
    if compression == "gzip" or compression == "none":
        return compression
    if compression != "auto":
        raise ValueError(f"compression must be 'auto', 'gzip' or 'none', not {compression!r}")
    with open(path, "rb") as f:
        return "gzip" if f.read(2) == GZIP_MAGIC else "none"


class _Reader:
    """Sequential record scanner over one open (possibly gzip-decompressing) stream."""

    def __init__(self, path: str, stream: IO[bytes], *, compressed: bool, file_size: int | None) -> None:
        self.path = path
        self.stream = stream
        self.compressed = compressed
        self.file_size = file_size  # known (and used to seek and to check lengths) for uncompressed files only
        self.offset = 0  # start of the record being read
        self.end_name = "end of decompressed stream" if compressed else "end of file"

    def error(self, detail: str) -> TFRecordError:
        return TFRecordError(self.path, self.offset, detail)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the stream), in bounded reads."""
        try:
            if n <= _READ_CHUNK:
                data = self.stream.read(n)
                if len(data) == n or not data:
                    return data
                parts = [data]
                n -= len(data)
            else:
                parts = []
            while n > 0:
                chunk = self.stream.read(min(n, _READ_CHUNK))
                if not chunk:
                    break
                parts.append(chunk)
                n -= len(chunk)
            return b"".join(parts)
        except _GZIP_ERRORS as exc:
            raise self.error(f"corrupt or truncated gzip stream ({type(exc).__name__}: {exc})") from exc

    def skip(self, n: int) -> int:
        """Move ``n`` bytes forward (seek, or decompress and discard); returns how many bytes were skipped."""
        if not self.compressed and self.file_size is not None:
            position = self.stream.tell()
            target = min(position + n, self.file_size)
            self.stream.seek(target)
            return target - position
        skipped = 0
        while skipped < n:
            chunk = self.read(min(n - skipped, 1 << 20))
            if not chunk:
                break
            skipped += len(chunk)
        return skipped

    def _first_record_hint(self) -> str:
        if self.offset != 0:
            return ""
        hint = "; not a TFRecord file?"
        if not self.compressed and self.file_size:
            position = self.stream.tell()
            self.stream.seek(0)
            if self.stream.read(2) == GZIP_MAGIC:
                hint += " (it starts with the gzip magic bytes 1f 8b: read it with compression='gzip' or 'auto')"
            self.stream.seek(position)
        return hint

    def _truncated_data(self, length: int, got: int) -> TFRecordError:
        return self.error(f"truncated record: header says {length} data bytes, {self.end_name} after {got}")

    def _truncated_footer(self, length: int, got: int) -> TFRecordError:
        return self.error(
            f"truncated record: data CRC cut off, {got} of {FOOTER_SIZE} bytes before {self.end_name} "
            f"(record of {length} bytes)"
        )

    def next_record(self, *, verify_crc: bool, want_data: bool) -> tuple[int, int, bytes | None] | None:
        """``(offset, length, data or None)`` of the next record, ``None`` at a clean end of the stream."""
        header = self.read(HEADER_SIZE)
        if not header:
            return None
        if len(header) < HEADER_SIZE:
            raise self.error(
                f"truncated record header: {len(header)} of {HEADER_SIZE} bytes before {self.end_name}"
                + self._first_record_hint()
            )
        length, length_crc = _HEADER.unpack(header)
        if verify_crc and masked_crc32c(header[:8]) != length_crc:
            raise self.error("length field CRC mismatch (corrupt record header)" + self._first_record_hint())
        if self.file_size is not None:
            available = self.file_size - self.offset - HEADER_SIZE
            if available < length:
                raise self._truncated_data(length, available)
            if available < length + FOOTER_SIZE:
                raise self._truncated_footer(length, available - length)
        data: bytes | None = None
        if want_data:
            data = self.read(length)
            if len(data) < length:
                raise self._truncated_data(length, len(data))
            footer = self.read(FOOTER_SIZE)
            if len(footer) < FOOTER_SIZE:
                raise self._truncated_footer(length, len(footer))
            if verify_crc and masked_crc32c(data) != _CRC.unpack(footer)[0]:
                raise self.error(f"data CRC mismatch (corrupt record of {length} bytes)")
        else:
            skipped = self.skip(length)
            if skipped < length:
                raise self._truncated_data(length, skipped)
            footer_skipped = self.skip(FOOTER_SIZE)
            if footer_skipped < FOOTER_SIZE:
                raise self._truncated_footer(length, footer_skipped)
        record = (self.offset, length, data)
        self.offset += HEADER_SIZE + length + FOOTER_SIZE
        return record


def _scan(
    path: StrPath,
    *,
    verify_crc: bool,
    compression: Compression,
    want_data: bool,
    start: int = 0,
    max_records: int | None = None,
) -> Iterator[tuple[int, int, bytes | None]]:
    path_str = os.fspath(path)
    mode = _resolve_compression(path_str, compression)
    with open(path_str, "rb", buffering=0 if (mode == "none" and not want_data) else -1) as raw:
        if mode == "gzip":
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")
            reader = _Reader(path_str, stream, compressed=True, file_size=None)
        else:
            stream = raw
            reader = _Reader(path_str, stream, compressed=False, file_size=os.fstat(raw.fileno()).st_size)
        with stream:
            if start:
                skipped = reader.skip(start)
                reader.offset = start
                if skipped < start:
                    raise reader.error(f"offset beyond the {reader.end_name} ({skipped} bytes)")
            count = 0
            while max_records is None or count < max_records:
                record = reader.next_record(verify_crc=verify_crc, want_data=want_data)
                if record is None:
                    return
                count += 1
                yield record


def iter_records_with_offsets(
    path: StrPath, verify_crc: bool = True, compression: Compression = "auto"
) -> Iterator[tuple[int, bytes]]:
    """Stream ``(offset, data)`` of every record; ``offset`` is where the record's 12-byte header starts.

    Framing: ``uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)``,
    little-endian. With ``verify_crc`` both checksums of every record are checked. ``compression="auto"`` reads the
    file as gzip when it starts with the gzip magic bytes ``1f 8b``; offsets of gzip files are offsets in the
    decompressed stream. The records before a malformed one are yielded before :class:`TFRecordError` is raised.
    """
    for offset, _, data in _scan(path, verify_crc=verify_crc, compression=compression, want_data=True):
        assert data is not None
        yield offset, data


def iter_records(path: StrPath, verify_crc: bool = True, compression: Compression = "auto") -> Iterator[bytes]:
    """Stream the data of every record (see :func:`iter_records_with_offsets`); an empty file yields nothing.

    Framing: ``uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)``.
    """
    for _, data in iter_records_with_offsets(path, verify_crc=verify_crc, compression=compression):
        yield data


def index_records(path: StrPath, verify_crc: bool = True, compression: Compression = "auto") -> list[tuple[int, int]]:
    """``(offset, length)`` of every record (offset of its header, length of its data).

    Framing: ``uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)``.
    Uncompressed files: only the 12-byte headers are read and the data is seeked past; with ``verify_crc`` the
    length CRC of each header is checked, and every record is checked to fit in the file (data and data CRC), but
    the data CRCs are NOT verified (use :func:`iter_records` or :func:`read_record_at` for that). Gzip files are
    decompressed as a stream (offsets are in the decompressed stream); their data CRCs are not verified either.
    """
    return [
        (offset, length)
        for offset, length, _ in _scan(path, verify_crc=verify_crc, compression=compression, want_data=False)
    ]


def read_record_at(path: StrPath, offset: int, verify_crc: bool = True, compression: Compression = "auto") -> bytes:
    """The data of the one record whose header starts at byte ``offset`` (from :func:`index_records`).

    Framing: ``uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)``.
    Uncompressed files are seeked; gzip files are decompressed up to ``offset`` (an offset in the decompressed
    stream), so random access into a gzip file costs a decompression of everything before the record.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    scan = _scan(path, verify_crc=verify_crc, compression=compression, want_data=True, start=offset, max_records=1)
    with contextlib.closing(scan):  # closes the file now, not when the generator is garbage collected
        for _, _, data in scan:
            assert data is not None
            return data
    raise TFRecordError(os.fspath(path), offset, "no record at this offset: it is the end of the stream")


# --------------------------------------------------------------------------------------------------- writing


def write_records(path: StrPath, records: Iterable[bytes], compression: Literal["gzip", "none"] = "none") -> int:
    """Write ``records`` as a TFRecord file atomically; returns the number of records written.

    Each record is framed as ``uint64 length | uint32 masked_crc32c(length bytes) | data | uint32
    masked_crc32c(data)``. The file is written through :func:`smartpretrain.io.atomic.atomic_output` (temp file
    in the same folder, fsync, rename over an existing ``path``), so readers never see a partial file; on any error
    the temp file is removed and an existing ``path`` is left untouched. ``compression="gzip"`` gzips the stream
    (deterministically: no file name or time stamp in the gzip header).
    """
    if compression not in ("gzip", "none"):
        raise ValueError(f"compression must be 'gzip' or 'none', not {compression!r}")
    target = Path(os.fspath(path))
    count = 0
    with atomic_output(target, make_parents=False) as tmp, open(tmp, "wb") as raw:
        out: IO[bytes] = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if compression == "gzip" else raw
        try:
            for data in records:
                out.write(encode_record(data))
                count += 1
        finally:
            if out is not raw:
                out.close()  # writes the gzip trailer; does not close ``raw``
    return count
