"""The embeddings file: round trip of records and metadata, streaming writes, atomicity, and every refusal."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smartpretrain.embeddings.records import (
    FORMAT_VERSION,
    METADATA_KEY,
    AgentSelection,
    CacheSplit,
    EmbeddingFileError,
    EmbeddingMetadata,
    EmbeddingRecords,
    EmbeddingWriter,
    QueryReduction,
    embedding_schema,
    read_embeddings,
    read_metadata,
    write_embeddings,
)

D = 4


def _metadata(**changes) -> EmbeddingMetadata:
    base = EmbeddingMetadata(
        model="pkg.Model", embedding_dim=D, agents=AgentSelection.FOCAL, reduction=QueryReduction.LAST,
        caches=(CacheSplit("/caches/av1/val", "f" * 64, 3),), model_config={"hidden_dim": 16},
        checkpoint="runs/ssl.ckpt", checkpoint_sha256="a" * 64, branch="online", seed=7,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def _records(n: int = 3, start: int = 0, dim: int = D) -> EmbeddingRecords:
    rng = np.random.default_rng(start)
    return EmbeddingRecords(
        scenario_id=[f"s{start + i}" for i in range(n)],
        track_id=[f"t{i}" for i in range(n)],
        dataset=["av1"] * n,
        role=["focal"] * n,
        step=np.arange(n) + 19,
        vector=rng.standard_normal((n, dim)).astype(np.float32),
    )


def _assert_same(a: EmbeddingRecords, b: EmbeddingRecords) -> None:
    assert (a.scenario_id, a.track_id, a.dataset, a.role) == (b.scenario_id, b.track_id, b.dataset, b.role)
    np.testing.assert_array_equal(a.step, b.step)
    np.testing.assert_array_equal(a.vector, b.vector)


def test_round_trip_keeps_records_metadata_and_types(tmp_path: Path) -> None:
    records, metadata = _records(), _metadata()
    path = write_embeddings(tmp_path / "e.parquet", records, metadata)
    got = read_embeddings(path)
    assert got.metadata == metadata and got.metadata.agents is AgentSelection.FOCAL
    _assert_same(got.records, records)
    assert got.records.vector.dtype == np.float32 and got.records.step.dtype == np.int32
    schema = pq.read_schema(path)
    assert schema.field("vector").type == pa.list_(pa.float32(), D)  # a fixed-size list, not a variable one
    assert schema.field("step").type == pa.int32() and schema.names == ["scenario_id", "track_id", "dataset",
                                                                       "role", "step", "vector"]  # fmt: skip
    stored = json.loads(schema.metadata[METADATA_KEY])
    assert stored["embedding_dim"] == D and stored["checkpoint_sha256"] == "a" * 64 and stored["branch"] == "online"
    assert stored["format_version"] == FORMAT_VERSION and stored["agents"] == "focal"
    assert read_metadata(path) == metadata


def test_streamed_chunks_are_one_file_in_order(tmp_path: Path) -> None:
    parts = [_records(2, 0), _records(0, 10), _records(3, 20)]
    with EmbeddingWriter(tmp_path / "e.parquet", _metadata()) as writer:
        for part in parts:
            writer.write(part)
        assert not (tmp_path / "e.parquet").exists()  # appears only when complete
    assert writer.num_rows == 5
    got = read_embeddings(tmp_path / "e.parquet").records
    _assert_same(got, EmbeddingRecords.concat(parts, D))
    assert got.scenario_id == ["s0", "s1", "s20", "s21", "s22"]


def test_an_empty_file_reads_back(tmp_path: Path) -> None:
    write_embeddings(tmp_path / "e.parquet", EmbeddingRecords.empty(D), _metadata())
    got = read_embeddings(tmp_path / "e.parquet").records
    assert len(got) == 0 and got.vector.shape == (0, D)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("embedding_dim", 128),
        ("model", "smartpretrain.backbones.qcnet.model.QCNet"),
        ("checkpoint_sha256", "b" * 64),
        ("branch", "momentum"),
        ("caches", (CacheSplit("/caches/av1/val", "0" * 64, 3),)),
        ("agents", "all"),
    ],
)
def test_a_file_unlike_the_expected_one_is_refused_in_one_line(tmp_path: Path, field: str, value) -> None:
    path = write_embeddings(tmp_path / "e.parquet", _records(), _metadata())
    pattern = rf"e\.parquet: {field} is .*expected {re.escape(repr(value))}"
    with pytest.raises(EmbeddingFileError, match=pattern) as info:
        read_embeddings(path, expected={field: value})
    assert "\n" not in str(info.value) and "pkg.Model D=4" in str(info.value)


def test_matching_expectations_pass_and_unknown_fields_are_a_caller_error(tmp_path: Path) -> None:
    path = write_embeddings(tmp_path / "e.parquet", _records(), _metadata())
    expected = {
        "model": "pkg.Model",
        "embedding_dim": D,
        "agents": "focal",
        "caches": (CacheSplit("/caches/av1/val", "f" * 64, 3),),
    }
    assert len(read_embeddings(path, expected=expected).records) == 3
    with pytest.raises(ValueError, match="unknown embedding metadata field 'dim'") as info:
        read_embeddings(path, expected={"dim": D})
    assert not isinstance(info.value, EmbeddingFileError)


def test_files_that_are_not_embeddings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingFileError, match="no such embeddings file"):
        read_embeddings(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(EmbeddingFileError, match="not a readable parquet file"):
        read_embeddings(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "plain.parquet")
    with pytest.raises(EmbeddingFileError, match="not a SmartPretrain embeddings file"):
        read_embeddings(tmp_path / "plain.parquet")


def test_another_format_version_or_a_vector_width_unlike_the_metadata_is_refused(tmp_path: Path) -> None:
    metadata = _metadata()
    table = _records().to_table(embedding_schema(metadata))
    newer = json.loads(metadata.to_json()) | {"format_version": FORMAT_VERSION + 1}
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(newer).encode()}), tmp_path / "v.parquet")
    with pytest.raises(EmbeddingFileError, match=f"format version {FORMAT_VERSION + 1}, this code reads"):
        read_embeddings(tmp_path / "v.parquet")
    wider = json.loads(metadata.to_json()) | {"embedding_dim": D + 1}
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(wider).encode()}), tmp_path / "w.parquet")
    with pytest.raises(EmbeddingFileError, match=r"do not match the embeddings schema \(D=5\)"):
        read_embeddings(tmp_path / "w.parquet")


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = write_embeddings(tmp_path / "e.parquet", _records(), _metadata())
    before = path.read_bytes()
    with pytest.raises(ValueError, match="records have 5-dimensional vectors, the file stores 4"):
        write_embeddings(path, _records(dim=5), _metadata())
    with pytest.raises(RuntimeError, match="boom"), EmbeddingWriter(path, _metadata()) as writer:
        writer.write(_records(2))
        raise RuntimeError("boom")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet"]


def test_records_and_metadata_validate_themselves() -> None:
    with pytest.raises(ValueError, match="column lengths"):
        EmbeddingRecords(["s"], ["t", "u"], ["av1"], ["focal"], np.zeros(1), np.zeros((1, D)))
    with pytest.raises(ValueError, match="embedding_dim must be >= 1"):
        _metadata(embedding_dim=0)
    with pytest.raises(ValueError, match="'nobody' is not a valid AgentSelection"):
        _metadata(agents="nobody")
