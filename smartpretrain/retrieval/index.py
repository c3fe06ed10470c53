"""An embedding index: a FAISS index over embedding vectors plus the id table naming each row, as one folder.

Kinds (:class:`IndexKind`), all on the squared L2 metric:

* ``flat``: exact search (``faiss.IndexFlatL2``), the reference the others are measured against;
* ``ivf``: ``faiss.IndexIVFFlat`` over an ``IndexFlatL2`` quantizer; ``nlist`` inverted lists (default
  ``4 * sqrt(N)``, at most ``N // 39`` so k-means sees >= 39 points per list), trained on the vectors or on a
  seeded random sample of at most ``256 * nlist`` of them; ``nprobe`` lists are visited per query;
* ``hnsw``: ``faiss.IndexHNSWFlat`` (``M`` neighbours per node, ``efConstruction`` at build, ``efSearch`` at
  query time).

The metric is always L2. Cosine retrieval is L2 on L2-normalised vectors (``|a - b|^2 = 2 - 2 cos(a, b)``): the
caller normalises the vectors (bank and queries) before building and searching.

A saved index is a folder of three files:

================  ===========================================================================================
file              content
================  ===========================================================================================
``index.faiss``   ``faiss.serialize_index`` bytes of the index
``ids.parquet``   one row per index row, in order: ``scenario_id``, ``track_id``, ``dataset``, ``role``
                  (strings), ``step`` (int32) — the embeddings file's columns without ``vector``
``index.json``    the manifest: ``format_version``, ``kind``, ``settings``, ``ntotal``, ``dim``, the
                  :class:`~smartpretrain.embeddings.records.EmbeddingMetadata` of the vectors (``metadata``)
                  and the size and sha256 of the two other files (``files``)
================  ===========================================================================================

Every file goes through :mod:`smartpretrain.io.atomic`, and the manifest is written last, with the hashes of
the files as written: a folder whose files do not match its manifest (a save cut short, a file replaced by
hand) is refused by :meth:`EmbeddingIndex.load`, as is one whose vectors were made by another model than the
caller expects.

FAISS is imported lazily (:func:`require_faiss`): without it, only :func:`exact_knn` (numpy) works.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smartpretrain.embeddings.records import EmbeddingMetadata, EmbeddingRecords
from smartpretrain.io.atomic import atomic_write_bytes, atomic_write_json, fsync_dir

__all__ = [
    "FORMAT_VERSION",
    "IDS_FILE",
    "INDEX_FILE",
    "MANIFEST_FILE",
    "QUERY_IDENTITY_FIELDS",
    "EmbeddingIndex",
    "IdTable",
    "IndexKind",
    "IndexSettings",
    "RetrievalIndexError",
    "default_nlist",
    "exact_knn",
    "require_faiss",
]

#: version of the folder layout (files + manifest fields); a reader refuses any other
FORMAT_VERSION = 2  # 2: its embedding metadata lists ``caches`` (embeddings format 2)
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
MANIFEST_FILE = "index.json"
#: metadata fields that must agree between queries and index: the same weights made both sets of vectors
QUERY_IDENTITY_FIELDS = (
    "model",
    "embedding_dim",
    "model_config",
    "checkpoint",
    "checkpoint_sha256",
    "branch",
    "seed",
)
#: k-means wants at least this many training points per list (FAISS warns below it)
MIN_POINTS_PER_LIST = 39
#: at most this many training points per list: more adds training time, not quality
MAX_POINTS_PER_LIST = 256
# bytes of the float64 distance block per chunk in exact_knn
_EXACT_CHUNK_BYTES = 1 << 27

_IDS_SCHEMA = pa.schema(
    [
        ("scenario_id", pa.string()),
        ("track_id", pa.string()),
        ("dataset", pa.string()),
        ("role", pa.string()),
        ("step", pa.int32()),
    ]
)


class RetrievalIndexError(ValueError):
    """An index folder that is missing, unreadable, inconsistent, or not the one the caller expects; or a search
    the index cannot answer (vectors of another width, another model)."""


def require_faiss() -> Any:
    """The ``faiss`` module, or a :class:`RetrievalIndexError` with the install hint when it is missing."""
    try:
        import faiss
    except ImportError:
        raise RetrievalIndexError("faiss is not installed: pip install faiss-cpu (or run scripts/setup.sh)") from None
    return faiss


class IndexKind(StrEnum):
    """The FAISS index type (see the module docstring)."""

    FLAT = "flat"  #: exact
    IVF = "ivf"  #: inverted lists over k-means cells
    HNSW = "hnsw"  #: hierarchical navigable small-world graph


def _check_int(name: str, value: Any, minimum: int) -> None:
    # bool is an int subclass; True as "nprobe" is a mistake, not 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"IndexSettings: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"IndexSettings: {name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class IndexSettings:
    """How an index is built and searched.

    Attributes:
        kind: the index type.
        nlist: IVF lists (None: :func:`default_nlist` of the vector count); IVF only.
        nprobe: IVF lists visited per query (clipped to ``nlist``).
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW candidate list length at build.
        ef_search: HNSW candidate list length at query time (FAISS uses at least ``k``).
        seed: seed of the IVF training sample.
    """

    kind: IndexKind = IndexKind.FLAT
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", IndexKind(self.kind))
        except ValueError:
            kinds = ", ".join(k.value for k in IndexKind)
            raise ValueError(f"IndexSettings: unknown index kind {self.kind!r} (one of {kinds})") from None
        if self.nlist is not None:
            if self.kind is not IndexKind.IVF:
                raise ValueError(
                    f"IndexSettings: nlist applies to kind=ivf only, got nlist={self.nlist} for {self.kind}"
                )
            _check_int("nlist", self.nlist, 1)
        _check_int("nprobe", self.nprobe, 1)
        _check_int("hnsw_m", self.hnsw_m, 2)
        _check_int("ef_construction", self.ef_construction, 1)
        _check_int("ef_search", self.ef_search, 1)
        _check_int("seed", self.seed, 0)

    def as_json(self) -> dict[str, Any]:
        """The settings as plain JSON values (the manifest's ``settings``)."""
        values = dataclasses.asdict(self)
        values["kind"] = str(self.kind)
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> IndexSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"IndexSettings: unknown settings {unknown}")
        return cls(**values)


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: ``4 * sqrt(n)``, at most ``n // 39`` (>= 39 training points per list), >= 1."""
    return max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_LIST))


@dataclass
class IdTable:
    """What each index row is: the embeddings file's id columns, row for row with the FAISS index.

    Attributes:
        scenario_id, track_id, dataset, role: ``N`` strings each.
        step: ``[N] int32``.
    """

    scenario_id: list[str]
    track_id: list[str]
    dataset: list[str]
    role: list[str]
    step: np.ndarray

    def __post_init__(self) -> None:
        self.scenario_id, self.track_id = list(self.scenario_id), list(self.track_id)
        self.dataset, self.role = list(self.dataset), list(self.role)
        self.step = np.asarray(self.step, np.int32).reshape(-1)
        n = len(self.scenario_id)
        lengths = {"track_id": len(self.track_id), "dataset": len(self.dataset), "role": len(self.role)}
        lengths["step"] = len(self.step)
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"IdTable: {n} scenario ids but column lengths {bad}")
        self._by_scenario: dict[str, list[int]] | None = None
        self._key_codes: tuple[dict[tuple[str, str, str, int], int], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.scenario_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdTable):
            return NotImplemented
        same = (self.scenario_id, self.track_id, self.dataset, self.role) == (
            other.scenario_id,
            other.track_id,
            other.dataset,
            other.role,
        )
        return same and np.array_equal(self.step, other.step)

    __hash__ = None  # type: ignore[assignment]  # mutable columns

    @classmethod
    def from_records(cls, records: EmbeddingRecords) -> IdTable:
        return cls(records.scenario_id, records.track_id, records.dataset, records.role, records.step)

    def row(self, i: int) -> tuple[str, str, str, str, int]:
        """``(scenario_id, track_id, dataset, role, step)`` of row ``i``."""
        return self.scenario_id[i], self.track_id[i], self.dataset[i], self.role[i], int(self.step[i])

    def find(self, scenario_id: str, track_id: str | None = None, dataset: str | None = None) -> list[int]:
        """The rows of ``scenario_id`` (and ``track_id``, ``dataset`` where given), ascending."""
        if self._by_scenario is None:
            by: dict[str, list[int]] = {}
            for i, s in enumerate(self.scenario_id):
                by.setdefault(s, []).append(i)
            self._by_scenario = by
        rows = self._by_scenario.get(scenario_id, [])
        return [
            i
            for i in rows
            if (track_id is None or self.track_id[i] == track_id) and (dataset is None or self.dataset[i] == dataset)
        ]

    def keys(self) -> list[tuple[str, str, str, int]]:
        """The identity ``(dataset, scenario_id, track_id, step)`` of each row."""
        return list(zip(self.dataset, self.scenario_id, self.track_id, self.step.tolist(), strict=True))

    def key_codes(self) -> tuple[dict[tuple[str, str, str, int], int], np.ndarray]:
        """``(key -> code, [N] int64 codes)`` of the identity ``(dataset, scenario_id, track_id, step)`` of each
        row: equal codes are the same item (what ``exclude_self`` compares, vectorised)."""
        if self._key_codes is None:
            codes: dict[tuple[str, str, str, int], int] = {}
            column = np.empty(len(self), np.int64)
            for i, key in enumerate(self.keys()):
                column[i] = codes.setdefault(key, len(codes))
            self._key_codes = codes, column
        return self._key_codes

    def to_table(self) -> pa.Table:
        columns = [
            pa.array(self.scenario_id, pa.string()),
            pa.array(self.track_id, pa.string()),
            pa.array(self.dataset, pa.string()),
            pa.array(self.role, pa.string()),
            pa.array(self.step, pa.int32()),
        ]
        return pa.Table.from_arrays(columns, schema=_IDS_SCHEMA)

    @classmethod
    def from_table(cls, table: pa.Table) -> IdTable:
        return cls(
            scenario_id=table.column("scenario_id").to_pylist(),
            track_id=table.column("track_id").to_pylist(),
            dataset=table.column("dataset").to_pylist(),
            role=table.column("role").to_pylist(),
            step=table.column("step").to_numpy(),
        )


def _as_matrix(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """``[Q, dim]`` float32 C-contiguous (what FAISS takes), refusing another width or non-finite values."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise RetrievalIndexError(f"{what} must be a [Q, D] matrix, got shape {array.shape}")
    if array.shape[1] != dim:
        raise RetrievalIndexError(f"{what} are {array.shape[1]}-dimensional, the index {dim}-dimensional")
    array = np.ascontiguousarray(array, np.float32)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise RetrievalIndexError(f"{what}: {int(bad.sum())} of {len(array)} vectors hold NaN or inf")
    return array


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise RetrievalIndexError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EmbeddingIndex:
    """A FAISS index over embedding vectors and the id table of its rows (see the module docstring).

    Attributes:
        settings: how it was built (``nlist`` resolved for IVF) and is searched.
        metadata: what made the vectors.
        ids: row ``i`` of the FAISS index is ``ids.row(i)``.
        faiss_index: the FAISS index (``ntotal == len(ids)``, ``d == metadata.embedding_dim``).
    """

    def __init__(self, settings: IndexSettings, metadata: EmbeddingMetadata, ids: IdTable, faiss_index: Any) -> None:
        if faiss_index.ntotal != len(ids):
            raise RetrievalIndexError(f"the FAISS index has {faiss_index.ntotal} vectors, the id table {len(ids)} rows")
        if faiss_index.d != metadata.embedding_dim:
            raise RetrievalIndexError(
                f"the FAISS index is {faiss_index.d}-dimensional, the metadata says {metadata.embedding_dim}"
            )
        self.settings = settings
        self.metadata = metadata
        self.ids = ids
        self.faiss_index = faiss_index
        self._direct_map = False
        self.configure()

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.faiss_index.d)

    @property
    def kind(self) -> IndexKind:
        return self.settings.kind

    def __repr__(self) -> str:
        return f"EmbeddingIndex({self.kind}, {len(self)} x {self.dim}, {self.metadata.model})"

    # ---------------------------------------------------------------- build

    @classmethod
    def build(cls, records: EmbeddingRecords, metadata: EmbeddingMetadata, settings: IndexSettings) -> EmbeddingIndex:
        """Index ``records.vector`` (row ``i`` of the index is record ``i``).

        Raises:
            RetrievalIndexError: no records, vectors whose width is not ``metadata.embedding_dim``, non-finite
                vectors, or an explicit IVF ``nlist`` larger than the vector count.
        """
        faiss = require_faiss()
        n = len(records)
        if n == 0:
            raise RetrievalIndexError("cannot build an index from no records")
        dim = int(metadata.embedding_dim)
        if records.dim != dim:
            raise RetrievalIndexError(
                f"records are {records.dim}-dimensional, their metadata says {dim} (embedding_dim)"
            )
        vectors = _as_matrix(records.vector, dim, "records' vectors")
        if settings.kind is IndexKind.FLAT:
            index = faiss.IndexFlatL2(dim)
        elif settings.kind is IndexKind.IVF:
            nlist = default_nlist(n) if settings.nlist is None else settings.nlist
            if nlist > n:
                raise RetrievalIndexError(f"nlist={nlist} lists need at least as many vectors to train, got {n}")
            settings = dataclasses.replace(settings, nlist=nlist)
            quantizer = faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)  # keeps a reference to quantizer
            index.train(cls._training_sample(vectors, nlist, settings.seed))
        else:
            index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_L2)
            index.hnsw.efConstruction = settings.ef_construction
        index.add(vectors)
        return cls(settings, metadata, IdTable.from_records(records), index)

    @staticmethod
    def _training_sample(vectors: np.ndarray, nlist: int, seed: int) -> np.ndarray:
        limit = MAX_POINTS_PER_LIST * nlist
        if len(vectors) <= limit:
            return vectors
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), limit, replace=False))
        return np.ascontiguousarray(vectors[rows])

    def configure(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Set the query-time parameters (``nprobe`` for IVF, ``efSearch`` for HNSW; None keeps the current
        setting) on the settings and the FAISS index."""
        changes = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        if changes:
            self.settings = dataclasses.replace(self.settings, **changes)
        if self.kind is IndexKind.IVF:
            require_faiss().extract_index_ivf(self.faiss_index).nprobe = min(
                self.settings.nprobe, int(self.faiss_index.nlist)
            )
        elif self.kind is IndexKind.HNSW:
            self.faiss_index.hnsw.efSearch = self.settings.ef_search

    # ---------------------------------------------------------------- search

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest index rows of each query vector.

        ``k`` larger than the index is clipped to its size, so the result has ``min(k, len(self))`` columns.

        Returns:
            ``[Q, k] float32`` squared L2 distances (as FAISS returns them, ascending) and ``[Q, k] int64`` rows of
            :attr:`ids`. A flat index always fills every column; IVF (lists visited hold fewer than k vectors)
            and HNSW (the graph search found fewer) may not: such impossible results are row ``-1`` with
            distance ``inf``.

        Raises:
            RetrievalIndexError: not a ``[Q, dim]`` matrix, non-finite values, or ``k < 1``.
        """
        queries = _as_matrix(vectors, self.dim, "query vectors")
        k = min(_check_k(k), len(self))
        distances, rows = self.faiss_index.search(queries, k)
        rows = rows.astype(np.int64, copy=False)
        distances = distances.astype(np.float32, copy=False)
        distances[rows < 0] = np.inf  # FAISS fills them with FLT_MAX; inf says "nothing" plainly
        return distances, rows

    def search_records(
        self, queries: EmbeddingRecords, query_metadata: EmbeddingMetadata, k: int, exclude_self: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with the vectors of ``queries``, after checking that the same weights made them.

        With ``exclude_self``, a query's own row (same ``dataset``, ``scenario_id``, ``track_id``, ``step``) is
        dropped from its hits: ``k + 1`` are searched and the first hit that is the query itself is removed (or
        the last hit, for a query not in the index), keeping ``k``. When ``k >= len(self)`` a query found in the
        index has one real neighbour fewer than the columns: its last column is ``-1`` / ``inf``.

        Raises:
            RetrievalIndexError: ``query_metadata`` differs from the index's in a field of
                :data:`QUERY_IDENTITY_FIELDS`, or as :meth:`search`.
        """
        # described from the queries' side: "seed is <theirs>, expected <the index's>"
        problem = query_metadata.mismatch({name: getattr(self.metadata, name) for name in QUERY_IDENTITY_FIELDS})
        if problem is not None:
            raise RetrievalIndexError(
                f"queries were embedded by {query_metadata.summary()}, the index holds {self.metadata.summary()}: "
                f"{problem}"
            )
        if not exclude_self:
            return self.search(queries.vector, k)
        codes, _ = self.ids.key_codes()
        keys = zip(queries.dataset, queries.scenario_id, queries.track_id, queries.step.tolist(), strict=True)
        # -1: a query not in the index, which no row's code equals
        query_codes = np.fromiter((codes.get(key, -1) for key in keys), np.int64, count=len(queries))
        return self._search_excluding(queries.vector, k, query_codes)

    def _search_excluding(self, vectors: np.ndarray, k: int, query_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = _check_k(k)
        width = min(k, len(self))
        distances, rows = self.search(vectors, k + 1)
        _, row_codes = self.ids.key_codes()
        is_self = (rows >= 0) & (row_codes[np.maximum(rows, 0)] == query_codes[:, None])
        first = is_self & (np.cumsum(is_self, axis=1) == 1)
        # a stable sort moves the (one) self hit to the end and keeps the order of the others
        order = np.argsort(first, axis=1, kind="stable")
        rows = np.take_along_axis(rows, order, axis=1)
        distances = np.take_along_axis(distances, order, axis=1)
        moved = np.take_along_axis(first, order, axis=1)
        rows[moved], distances[moved] = -1, np.inf
        return np.ascontiguousarray(distances[:, :width]), np.ascontiguousarray(rows[:, :width])

    def search_id(
        self, scenario_id: str, track_id: str | None, k: int, dataset: str | None = None, exclude_self: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours of an item of the index itself, searched with its stored vector.

        ``track_id`` / ``dataset`` None match any; exactly one row must match. With ``exclude_self`` the item is
        not among its own neighbours (as :meth:`search_records`).

        Returns:
            ``[k] float32`` squared L2 distances and ``[k] int64`` rows (one query: 1-D).

        Raises:
            RetrievalIndexError: no row matches, or several do (their track, dataset and step are listed).
        """
        rows = self.ids.find(scenario_id, track_id, dataset)
        where = f"scenario {scenario_id!r}" + (f" track {track_id!r}" if track_id is not None else "")
        where += f" of dataset {dataset!r}" if dataset is not None else ""
        if not rows:
            raise RetrievalIndexError(f"no item {where} in the index ({len(self)} rows)")
        if len(rows) > 1:
            shown = ", ".join(
                f"track {self.ids.track_id[i]} of {self.ids.dataset[i]} step {int(self.ids.step[i])}" for i in rows[:5]
            )
            more = f", ... ({len(rows) - 5} more)" if len(rows) > 5 else ""
            raise RetrievalIndexError(
                f"{where} matches {len(rows)} items ({shown}{more}): give track_id / dataset to pick one"
            )
        row = rows[0]
        vector = self._reconstruct(row)
        if exclude_self:
            _, row_codes = self.ids.key_codes()
            distances, hits = self._search_excluding(vector, k, row_codes[[row]])
        else:
            distances, hits = self.search(vector, k)
        return distances[0], hits[0]

    def _reconstruct(self, row: int) -> np.ndarray:
        if self.kind is IndexKind.IVF and not self._direct_map:
            # IVF stores vectors by list; the row -> (list, offset) map is built once, on first use
            require_faiss().extract_index_ivf(self.faiss_index).make_direct_map()
            self._direct_map = True
        return np.asarray(self.faiss_index.reconstruct(int(row)), np.float32).reshape(1, -1)

    # ---------------------------------------------------------------- save / load

    def save(self, folder: str | Path) -> Path:
        """Write the index folder (``index.faiss``, ``ids.parquet``, then ``index.json``); returns ``folder``."""
        faiss = require_faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # an older manifest goes first: until the new one lands, the folder reads as unfinished, not as the old index
        (folder / MANIFEST_FILE).unlink(missing_ok=True)
        fsync_dir(folder)
        index_bytes = faiss.serialize_index(self.faiss_index).tobytes()
        sink = pa.BufferOutputStream()
        pq.write_table(self.ids.to_table(), sink)
        ids_bytes = sink.getvalue().to_pybytes()
        atomic_write_bytes(folder / INDEX_FILE, index_bytes)
        atomic_write_bytes(folder / IDS_FILE, ids_bytes)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": str(self.kind),
            "settings": self.settings.as_json(),
            "ntotal": len(self),
            "dim": self.dim,
            "metadata": json.loads(self.metadata.to_json()),
            "files": {
                INDEX_FILE: {"bytes": len(index_bytes), "sha256": _sha256(index_bytes)},
                IDS_FILE: {"bytes": len(ids_bytes), "sha256": _sha256(ids_bytes)},
            },
        }
        atomic_write_json(folder / MANIFEST_FILE, manifest)
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        expected: Mapping[str, Any] | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> EmbeddingIndex:
        """Read an index folder, refusing one that is incomplete, inconsistent, or holds vectors whose metadata
        differs from ``expected`` (field name -> value, as :func:`~smartpretrain.embeddings.records.read_embeddings`).
        ``nprobe`` / ``ef_search`` override the stored query-time settings.

        Raises:
            RetrievalIndexError: one line naming the file and what is wrong.
            ValueError: ``expected`` names an unknown metadata field.
        """
        faiss = require_faiss()
        folder = Path(folder)
        if not folder.is_dir():
            raise RetrievalIndexError(f"{folder}: not an index folder (no such folder)")
        manifest_path = folder / MANIFEST_FILE
        if not manifest_path.is_file():
            raise RetrievalIndexError(
                f"{folder}: not an index folder ({MANIFEST_FILE} not found; or its save did not finish)"
            )
        try:
            manifest = json.loads(manifest_path.read_bytes())
            version = manifest.get("format_version")
        except (OSError, ValueError, AttributeError) as exc:
            raise RetrievalIndexError(f"{manifest_path}: not a readable index manifest ({exc})") from None
        if version != FORMAT_VERSION:
            raise RetrievalIndexError(
                f"{manifest_path}: index format version {version!r}, this code reads {FORMAT_VERSION}"
            )
        try:
            settings = IndexSettings.from_json(manifest["settings"])
            metadata = EmbeddingMetadata.from_json(json.dumps(manifest["metadata"]))
            ntotal, dim, files = int(manifest["ntotal"]), int(manifest["dim"]), manifest["files"]
            hashes = {name: str(files[name]["sha256"]) for name in (INDEX_FILE, IDS_FILE)}
        except (KeyError, TypeError, ValueError) as exc:
            raise RetrievalIndexError(
                f"{manifest_path}: malformed index manifest ({type(exc).__name__}: {exc})"
            ) from None
        if manifest.get("kind") != str(settings.kind):
            raise RetrievalIndexError(
                f"{manifest_path}: kind {manifest.get('kind')!r} but settings say {settings.kind}"
            )

        problem = metadata.mismatch(expected or {})
        if problem is not None:
            raise RetrievalIndexError(f"index {folder} holds vectors of {metadata.summary()}: {problem}")

        # each file is read once: the bytes hashed are the bytes parsed
        data = {}
        for name, what in ((INDEX_FILE, "the FAISS index"), (IDS_FILE, "the id table")):
            path = folder / name
            if not path.is_file():
                raise RetrievalIndexError(f"{folder}: {name} not found ({what}, listed in {MANIFEST_FILE})")
            data[name] = path.read_bytes()
            have = _sha256(data[name])
            if have != hashes[name]:
                raise RetrievalIndexError(
                    f"{path}: {name} does not match {MANIFEST_FILE} (sha256 {have[:12]}..., the manifest records "
                    f"{hashes[name][:12]}...): {what} is not the one this index was built with"
                )

        ids_path = folder / IDS_FILE
        try:
            table = pq.read_table(pa.BufferReader(data[IDS_FILE]))
        except (pa.ArrowException, OSError) as exc:
            raise RetrievalIndexError(f"{ids_path}: not a readable parquet file ({exc})") from None
        if not table.schema.remove_metadata().equals(_IDS_SCHEMA):
            have = ", ".join(f"{f.name}: {f.type}" for f in table.schema)
            raise RetrievalIndexError(f"{ids_path}: columns [{have}] are not the id table's")
        ids = IdTable.from_table(table)

        index_path = folder / INDEX_FILE
        try:
            index = faiss.deserialize_index(np.frombuffer(data[INDEX_FILE], np.uint8))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RetrievalIndexError(f"{index_path}: not a readable FAISS index ({first})") from None
        want_type = {
            IndexKind.FLAT: faiss.IndexFlat,
            IndexKind.IVF: faiss.IndexIVFFlat,
            IndexKind.HNSW: faiss.IndexHNSWFlat,
        }
        if not isinstance(index, want_type[settings.kind]) or index.metric_type != faiss.METRIC_L2:
            raise RetrievalIndexError(
                f"{index_path}: a {type(index).__name__}, not the L2 {settings.kind} index of the manifest"
            )
        if index.ntotal != ntotal or len(ids) != ntotal:
            raise RetrievalIndexError(
                f"{folder}: {INDEX_FILE} holds {index.ntotal} vectors, {IDS_FILE} {len(ids)} rows, "
                f"the manifest says {ntotal}"
            )
        if index.d != dim or dim != metadata.embedding_dim:
            raise RetrievalIndexError(
                f"{folder}: {INDEX_FILE} is {index.d}-dimensional, the manifest says {dim}, the embedding metadata "
                f"{metadata.embedding_dim}"
            )
        loaded = cls(settings, metadata, ids, index)
        loaded.configure(nprobe=nprobe, ef_search=ef_search)
        return loaded


def exact_knn(
    bank: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k nearest bank rows of each query (numpy, float64 arithmetic), the reference for the indexes.

    Queries are processed in chunks so the ``chunk x N`` distance block stays near 128 MiB (10^5 queries over a
    10^4 bank never hold the full matrix). Ties are broken by the lower row. ``k`` is clipped to the bank size.

    Args:
        bank: ``[N, D]`` vectors.
        queries: ``[Q, D]`` vectors.
        k: neighbours per query.
        exclude: ``[Q] int64``, a bank row never returned for each query (``-1``: none). When it leaves fewer
            than ``k`` rows, the last column is ``-1`` with distance ``inf``.

    Returns:
        ``[Q, k] float32`` squared L2 distances (ascending) and ``[Q, k] int64`` bank rows.
    """
    bank64 = np.asarray(bank, np.float64)
    query64 = np.asarray(queries, np.float64)
    if bank64.ndim != 2 or query64.ndim != 2 or bank64.shape[1] != query64.shape[1]:
        raise ValueError(f"exact_knn: bank {bank64.shape} and queries {query64.shape} must be [N, D] and [Q, D]")
    n, q = len(bank64), len(query64)
    if n == 0:
        raise ValueError("exact_knn: empty bank")
    k = min(_check_k(k), n)
    if exclude is not None:
        exclude = np.asarray(exclude, np.int64).reshape(-1)
        if len(exclude) != q:
            raise ValueError(f"exact_knn: {len(exclude)} exclude rows for {q} queries")
    bank_sq = np.einsum("nd,nd->n", bank64, bank64)
    out_d = np.empty((q, k), np.float32)
    out_r = np.empty((q, k), np.int64)
    chunk = max(1, _EXACT_CHUNK_BYTES // (8 * n))
    for lo in range(0, q, chunk):
        part = query64[lo : lo + chunk]
        # |q - b|^2 = |q|^2 + |b|^2 - 2 q.b; clipped at 0 against rounding
        dist = np.einsum("qd,qd->q", part, part)[:, None] + bank_sq[None, :] - 2.0 * (part @ bank64.T)
        np.maximum(dist, 0.0, out=dist)
        if exclude is not None:
            ex = exclude[lo : lo + len(part)]
            has = ex >= 0
            dist[np.flatnonzero(has), ex[has]] = np.inf
        if k < n:
            top = np.argpartition(dist, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(n), (len(part), n))
        top_d = np.take_along_axis(dist, top, axis=1)
        # sort by distance, then row: deterministic among ties
        order = np.lexsort((top, top_d), axis=1)
        rows = np.take_along_axis(top, order, axis=1)
        d = np.take_along_axis(top_d, order, axis=1)
        rows = np.where(np.isinf(d), -1, rows)
        out_d[lo : lo + len(part)] = d
        out_r[lo : lo + len(part)] = rows
    return out_d, out_r
