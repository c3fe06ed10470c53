"""Per-agent embedding records and the one columnar file that stores them: writer and reader on one schema.

A file is a parquet table with one row per embedded agent:

==============  =================================  ==========================================================
column          type                               meaning
==============  =================================  ==========================================================
``scenario_id`` string                             the scene (``Scene.scenario_id``)
``track_id``    string                             the agent (``scene.agents.ids``)
``dataset``     string                             :class:`~smartpretrain.data.taxonomy.Dataset` value
``role``        string                             :class:`~smartpretrain.data.taxonomy.AgentRole` name, lower
                                                   case (``focal``, ``scored``, ``unscored``, ``fragment``)
``step``        int32                              the scene's current step: the embedding is of the history
                                                   up to and including it
``vector``      fixed_size_list<float32>[D]        the embedding
==============  =================================  ==========================================================

The schema's metadata key :data:`METADATA_KEY` holds :class:`EmbeddingMetadata` as JSON: which model and weights
made the vectors (class, config, checkpoint source + sha256, SSL branch, seed), how (agents, query reduction),
and from which caches (for each split folder: its path, :func:`~smartpretrain.embeddings.extract.cache_fingerprint`
and the number of scenes embedded; a mixture's vectors list every component's split). A
reader states what it expects (:func:`read_embeddings` ``expected=``) and a file that differs is refused with
one line naming the field: vectors of another model, dimension or cache are never mixed silently.

Files are written through :func:`smartpretrain.io.atomic.atomic_output` (a reader never sees a partial file),
in row groups as the batches come (:class:`EmbeddingWriter`), so a large cache needs no table in memory.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from smartpretrain.data.taxonomy import AgentRole
from smartpretrain.io.atomic import atomic_output

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "AgentSelection",
    "CacheSplit",
    "EmbeddingFile",
    "EmbeddingFileError",
    "EmbeddingMetadata",
    "EmbeddingRecords",
    "EmbeddingWriter",
    "QueryReduction",
    "embedding_schema",
    "read_embeddings",
    "read_metadata",
    "role_name",
    "write_embeddings",
]

#: version of the file layout (columns + metadata fields); a reader refuses any other (2: ``caches`` lists every
#: cache split, for vectors of a mixture, where 1 had one ``cache``)
FORMAT_VERSION = 2
#: the schema metadata key holding :class:`EmbeddingMetadata` (JSON)
METADATA_KEY = b"smartpretrain.embeddings"


class EmbeddingFileError(ValueError):
    """An embeddings file that is missing, unreadable, malformed, or not the one the caller expects."""


class AgentSelection(StrEnum):
    """Which agents of each scene are embedded (the roles of :func:`~smartpretrain.metrics.forecasting.select_agents`,
    plus every agent)."""

    FOCAL = "focal"  #: the focal agent only (one per scene; the k-NN probe's query)
    SCORED = "scored"  #: focal and scored agents
    ALL = "all"  #: every agent the backbone embeds (QCNet: every agent observed in the history)

    def mask(self, role: Tensor) -> Tensor:
        """``[A] bool`` rows to keep, from ``[A]`` :class:`~smartpretrain.data.taxonomy.AgentRole` values."""
        if self is AgentSelection.FOCAL:
            return role == int(AgentRole.FOCAL)
        if self is AgentSelection.SCORED:
            return (role == int(AgentRole.FOCAL)) | (role == int(AgentRole.SCORED))
        return torch.ones_like(role, dtype=torch.bool)


class QueryReduction(StrEnum):
    """How the Q "query step" embeddings of an agent (``[A, Q, D]``; Q = 1 for most backbones, QCNet's propose
    stage gives one per recurrence) become one vector."""

    LAST = "last"  #: the last query step (QCNet: the query after the last propose recurrence, the most refined)
    MEAN = "mean"  #: the mean over the query steps

    def reduce(self, embeddings: Tensor) -> Tensor:
        """``[A, Q, D] -> [A, D]``."""
        if embeddings.dim() != 3:
            raise ValueError(f"expected [A, Q, D] embeddings, got shape {tuple(embeddings.shape)}")
        return embeddings[:, -1] if self is QueryReduction.LAST else embeddings.mean(dim=1)


def role_name(role: int) -> str:
    """The ``role`` column's value for an :class:`~smartpretrain.data.taxonomy.AgentRole`."""
    return AgentRole(int(role)).name.lower()


@dataclass(frozen=True)
class CacheSplit:
    """One cache split folder whose first ``num_scenes`` scenes were embedded.

    Attributes:
        path: the split folder, absolute.
        fingerprint: :func:`~smartpretrain.embeddings.extract.cache_fingerprint` of it when it was embedded.
        num_scenes: how many of its scenes (the first ones, in cache order).
    """

    path: str
    fingerprint: str
    num_scenes: int

    def __post_init__(self) -> None:
        if int(self.num_scenes) < 0:
            raise ValueError(f"num_scenes must be >= 0, got {self.num_scenes}")


@dataclass(frozen=True)
class EmbeddingMetadata:
    """What made the vectors of a file (stored in its schema metadata; see the module docstring).

    Attributes:
        model: the backbone class, ``module.QualName``.
        embedding_dim: D, the width of ``vector``.
        agents: which agents were embedded.
        reduction: how query steps were reduced.
        caches: the cache splits the scenes came from, in the order of the rows (one for a single dataset, one
            per component for a mixture).
        model_config: the backbone's constructor arguments as plain JSON values (empty when unknown).
        checkpoint: where the weights came from (a path / URL as given; None: the freshly seeded model).
        checkpoint_sha256: sha256 of the checkpoint file (None without one).
        branch: ``online`` / ``momentum`` for weights read from an SSL checkpoint, else None.
        seed: the seed the model was built under (what a run without checkpoint depends on).
        format_version: :data:`FORMAT_VERSION` of the writer.
    """

    model: str
    embedding_dim: int
    agents: AgentSelection
    reduction: QueryReduction
    caches: tuple[CacheSplit, ...]
    model_config: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    branch: str | None = None
    seed: int | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", AgentSelection(self.agents))
        object.__setattr__(self, "reduction", QueryReduction(self.reduction))
        caches = tuple(c if isinstance(c, CacheSplit) else CacheSplit(**c) for c in self.caches)
        object.__setattr__(self, "caches", caches)
        if int(self.embedding_dim) < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
        if not caches:
            raise ValueError("caches: at least one cache split")

    @property
    def num_scenes(self) -> int:
        """Scenes embedded over all cache splits."""
        return sum(int(c.num_scenes) for c in self.caches)

    def single_cache(self) -> CacheSplit:
        """The one cache split of single-dataset vectors.

        Raises:
            ValueError: the vectors come from several (a mixture), naming them.
        """
        if len(self.caches) != 1:
            raise ValueError(f"expected vectors of one cache split, got {len(self.caches)}: {self.cache_names()}")
        return self.caches[0]

    def cache_names(self) -> str:
        """The cache split folders, comma-separated (for messages)."""
        return ", ".join(c.path for c in self.caches)

    def to_json(self) -> str:
        values = asdict(self)
        values["agents"], values["reduction"] = str(self.agents), str(self.reduction)
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> EmbeddingMetadata:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown metadata fields {unknown}")
        return cls(**values)

    def mismatch(self, expected: Mapping[str, Any]) -> str | None:
        """The first field whose value differs from ``expected`` (field name -> value), described; None if all
        agree.

        Raises:
            ValueError: ``expected`` names a field that does not exist (a caller's mistake, not the file's).
        """
        known = {f.name for f in fields(self)}
        for name, want in expected.items():
            if name not in known:
                raise ValueError(f"unknown embedding metadata field {name!r}; one of {', '.join(sorted(known))}")
            have = getattr(self, name)
            if have != want:
                return f"{name} is {have!r}, expected {want!r}"
        return None

    def summary(self) -> str:
        """One line: model, dimension, weights and cache (for messages)."""
        weights = self.checkpoint or f"seed {self.seed}"
        if self.branch:
            weights += f" ({self.branch} branch)"
        return f"{self.model} D={self.embedding_dim}, weights {weights}, {self.agents} agents of {self.cache_names()}"


def embedding_schema(metadata: EmbeddingMetadata) -> pa.Schema:
    """The file schema for ``metadata`` (its ``vector`` width and metadata key)."""
    return pa.schema(
        [
            ("scenario_id", pa.string()),
            ("track_id", pa.string()),
            ("dataset", pa.string()),
            ("role", pa.string()),
            ("step", pa.int32()),
            ("vector", pa.list_(pa.float32(), int(metadata.embedding_dim))),
        ],
        metadata={METADATA_KEY: metadata.to_json().encode()},
    )


@dataclass
class EmbeddingRecords:
    """N per-agent records, column by column (the rows of the file, in memory).

    Attributes:
        scenario_id, track_id, dataset, role: ``N`` strings each (``role``: :func:`role_name` values).
        step: ``[N] int32``.
        vector: ``[N, D] float32``.
    """

    scenario_id: list[str]
    track_id: list[str]
    dataset: list[str]
    role: list[str]
    step: np.ndarray
    vector: np.ndarray

    def __post_init__(self) -> None:
        self.step = np.asarray(self.step, np.int32).reshape(-1)
        self.vector = np.asarray(self.vector, np.float32)
        n = len(self.scenario_id)
        if self.vector.ndim != 2:
            raise ValueError(f"vector must be [N, D], got shape {self.vector.shape}")
        lengths = {
            "track_id": len(self.track_id),
            "dataset": len(self.dataset),
            "role": len(self.role),
            "step": len(self.step),
            "vector": len(self.vector),
        }
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"EmbeddingRecords: {n} scenario ids but column lengths {bad}")

    def __len__(self) -> int:
        return len(self.scenario_id)

    @property
    def dim(self) -> int:
        return int(self.vector.shape[1])

    @classmethod
    def empty(cls, dim: int) -> EmbeddingRecords:
        return cls([], [], [], [], np.zeros(0, np.int32), np.zeros((0, dim), np.float32))

    @classmethod
    def concat(cls, parts: Sequence[EmbeddingRecords], dim: int) -> EmbeddingRecords:
        """All rows of ``parts`` in order (``dim`` gives the width when there are none)."""
        if not parts:
            return cls.empty(dim)
        return cls(
            scenario_id=[x for p in parts for x in p.scenario_id],
            track_id=[x for p in parts for x in p.track_id],
            dataset=[x for p in parts for x in p.dataset],
            role=[x for p in parts for x in p.role],
            step=np.concatenate([p.step for p in parts]),
            vector=np.concatenate([p.vector for p in parts]),
        )

    def to_table(self, schema: pa.Schema) -> pa.Table:
        width = schema.field("vector").type.list_size
        if self.dim != width:
            raise ValueError(f"records have {self.dim}-dimensional vectors, the file stores {width}")
        flat = pa.array(np.ascontiguousarray(self.vector).reshape(-1), pa.float32())
        columns = [
            pa.array(self.scenario_id, pa.string()),
            pa.array(self.track_id, pa.string()),
            pa.array(self.dataset, pa.string()),
            pa.array(self.role, pa.string()),
            pa.array(self.step, pa.int32()),
            pa.FixedSizeListArray.from_arrays(flat, width),
        ]
        return pa.Table.from_arrays(columns, schema=schema)

    @classmethod
    def from_table(cls, table: pa.Table) -> EmbeddingRecords:
        width = table.schema.field("vector").type.list_size
        vectors = table.column("vector").combine_chunks()
        flat = vectors.flatten().to_numpy(zero_copy_only=False)
        return cls(
            scenario_id=table.column("scenario_id").to_pylist(),
            track_id=table.column("track_id").to_pylist(),
            dataset=table.column("dataset").to_pylist(),
            role=table.column("role").to_pylist(),
            step=table.column("step").to_numpy(),
            vector=flat.reshape(len(table), width),
        )


@dataclass
class EmbeddingFile:
    """A read embeddings file: what made it, and its records."""

    metadata: EmbeddingMetadata
    records: EmbeddingRecords


class EmbeddingWriter:
    """Streams records into one embeddings file, atomically: ``with EmbeddingWriter(path, metadata) as w:
    w.write(records)``. The file appears (complete) when the block ends without error; on an error nothing is
    left behind and an older file at ``path`` is untouched."""

    def __init__(self, path: str | Path, metadata: EmbeddingMetadata) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.schema = embedding_schema(metadata)
        self.num_rows = 0
        self._stack: contextlib.ExitStack | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> EmbeddingWriter:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path))
            self._writer = stack.enter_context(pq.ParquetWriter(tmp, self.schema))
            self._stack = stack.pop_all()
        return self

    def write(self, records: EmbeddingRecords) -> None:
        if self._writer is None:
            raise RuntimeError("EmbeddingWriter.write outside its `with` block")
        if len(records):
            self._writer.write_table(records.to_table(self.schema))
            self.num_rows += len(records)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        stack, self._stack, self._writer = self._stack, None, None
        # LIFO: the parquet writer closes (footer written), then the temp file is renamed (or removed on error)
        return stack.__exit__(exc_type, exc, tb) if stack is not None else None


def write_embeddings(path: str | Path, records: EmbeddingRecords, metadata: EmbeddingMetadata) -> Path:
    """Write ``records`` as one embeddings file (atomically); returns ``path``."""
    with EmbeddingWriter(path, metadata) as writer:
        writer.write(records)
    return Path(path)


def _schema(path: Path) -> pa.Schema:
    if not path.is_file():
        raise EmbeddingFileError(f"{path}: no such embeddings file")
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise EmbeddingFileError(f"{path}: not a readable parquet file ({exc})") from None


def read_metadata(path: str | Path) -> EmbeddingMetadata:
    """The :class:`EmbeddingMetadata` of a file (reads the schema only), after checking its layout.

    Raises:
        EmbeddingFileError: missing or unreadable file, no SmartPretrain metadata, another format version, or
            columns that do not match the metadata.
    """
    path = Path(path)
    schema = _schema(path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise EmbeddingFileError(
            f"{path}: not a SmartPretrain embeddings file (no {METADATA_KEY.decode()!r} schema metadata)"
        )
    version = json.loads(raw).get("format_version")
    if version != FORMAT_VERSION:
        raise EmbeddingFileError(f"{path}: embeddings format version {version}, this code reads {FORMAT_VERSION}")
    try:
        metadata = EmbeddingMetadata.from_json(raw)
    except (ValueError, TypeError) as exc:
        raise EmbeddingFileError(f"{path}: malformed embeddings metadata ({exc})") from None
    want = embedding_schema(metadata)
    if not schema.remove_metadata().equals(want.remove_metadata()):
        have = ", ".join(f"{f.name}: {f.type}" for f in schema)
        raise EmbeddingFileError(
            f"{path}: columns [{have}] do not match the embeddings schema (D={metadata.embedding_dim})"
        )
    return metadata


def read_embeddings(path: str | Path, expected: Mapping[str, Any] | None = None) -> EmbeddingFile:
    """Read an embeddings file, refusing one whose metadata differs from ``expected`` (field name -> value, e.g.
    ``{"model": ..., "embedding_dim": 128, "cache_fingerprint": ...}``) before any row is read.

    Raises:
        EmbeddingFileError: as :func:`read_metadata`, or one line naming the first field that differs from
            ``expected`` and what the file holds.
        ValueError: ``expected`` names an unknown field.
    """
    path = Path(path)
    metadata = read_metadata(path)
    problem = metadata.mismatch(expected or {})
    if problem is not None:
        raise EmbeddingFileError(f"{path}: {problem} (the file holds embeddings of {metadata.summary()})")
    return EmbeddingFile(metadata, EmbeddingRecords.from_table(pq.read_table(path)))
