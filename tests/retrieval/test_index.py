"""The FAISS index with its id table: exact search equals brute force, approximate recall, the folder round trip,
and the refusals (a tampered or incomplete folder, another model's vectors or queries, a missing FAISS)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smartpretrain.embeddings.records import (
    AgentSelection,
    CacheSplit,
    EmbeddingMetadata,
    EmbeddingRecords,
    QueryReduction,
)
from smartpretrain.retrieval import index as index_module
from smartpretrain.retrieval.index import (
    EmbeddingIndex,
    IndexKind,
    IndexSettings,
    RetrievalIndexError,
    default_nlist,
    exact_knn,
    require_faiss,
)


def _meta(dim: int = 16, model: str = "tests.Model", seed: int = 0) -> EmbeddingMetadata:
    return EmbeddingMetadata(model=model, embedding_dim=dim, agents=AgentSelection.ALL, reduction=QueryReduction.LAST,
                             caches=(CacheSplit("/tmp/cache", "f" * 64, 10),), seed=seed)  # fmt: skip


def _records(vectors: np.ndarray) -> EmbeddingRecords:
    n = len(vectors)
    return EmbeddingRecords(
        scenario_id=[f"s{i // 4}" for i in range(n)],
        track_id=[f"t{i % 4}" for i in range(n)],
        dataset=["av1"] * n,
        role=["unscored"] * n,
        step=np.zeros(n, np.int32),
        vector=vectors,
    )


def _clustered(n: int, dim: int = 16, clusters: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(clusters, size=n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_flat_search_equals_brute_force() -> None:
    bank = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    queries = np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32)
    index = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(IndexKind.FLAT))
    dist, rows = index.search(queries, 10)
    want = ((queries[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1)
    order = np.argsort(want, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, order)
    np.testing.assert_allclose(dist, np.take_along_axis(want, order, axis=1), rtol=1e-4, atol=1e-4)
    ref_dist, ref_rows = exact_knn(bank, queries, 10)
    np.testing.assert_array_equal(ref_rows, order)
    np.testing.assert_allclose(ref_dist, dist, rtol=1e-4, atol=1e-4)


def test_exact_knn_excludes_the_given_rows() -> None:
    bank = np.random.default_rng(0).normal(size=(50, 4))
    _, rows = exact_knn(bank, bank[:5], 3, exclude=np.arange(5))
    assert not (rows == np.arange(5)[:, None]).any()


@pytest.mark.parametrize("kind", [IndexKind.IVF, IndexKind.HNSW])
def test_approximate_indexes_recall_the_flat_neighbours(kind: IndexKind) -> None:
    bank, queries = _clustered(5000), _clustered(200, seed=3)
    flat = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(IndexKind.FLAT))
    approx = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(kind))
    _, want = flat.search(queries, 10)
    _, got = approx.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize("kind", list(IndexKind))
def test_save_and_load_give_the_same_index(kind: IndexKind, tmp_path: Path) -> None:
    bank, queries = _clustered(2000), _clustered(50, seed=5)
    index = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(kind))
    index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx", expected={"embedding_dim": 16, "model": "tests.Model"})
    assert loaded.ids.keys() == index.ids.keys() and loaded.ids == index.ids and loaded.metadata == index.metadata
    assert loaded.settings == index.settings
    for a, b in zip(index.search(queries, 8), loaded.search(queries, 8), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_tampered_id_table_is_refused(tmp_path: Path) -> None:
    EmbeddingIndex.build(_records(_clustered(100)), _meta(), IndexSettings()).save(tmp_path)
    table = pq.read_table(tmp_path / "ids.parquet").to_pydict()
    table["track_id"][0] = "someone-else"
    pq.write_table(pa.table(table), tmp_path / "ids.parquet")
    with pytest.raises(RetrievalIndexError, match=r"ids\.parquet does not match index\.json"):
        EmbeddingIndex.load(tmp_path)


def test_an_incomplete_folder_is_refused(tmp_path: Path) -> None:
    EmbeddingIndex.build(_records(_clustered(100)), _meta(), IndexSettings()).save(tmp_path)
    (tmp_path / "index.faiss").unlink()
    with pytest.raises(RetrievalIndexError, match=r"index\.faiss not found"):
        EmbeddingIndex.load(tmp_path)
    with pytest.raises(RetrievalIndexError, match="not an index folder"):
        EmbeddingIndex.load(tmp_path / "nowhere")


def test_an_index_of_another_model_or_dimension_is_refused(tmp_path: Path) -> None:
    EmbeddingIndex.build(_records(_clustered(100)), _meta(), IndexSettings()).save(tmp_path)
    with pytest.raises(RetrievalIndexError, match="embedding_dim is 16, expected 8"):
        EmbeddingIndex.load(tmp_path, expected={"embedding_dim": 8})
    with pytest.raises(RetrievalIndexError, match=r"model is 'tests\.Model'"):
        EmbeddingIndex.load(tmp_path, expected={"model": "other.Model"})


def test_queries_of_another_space_or_width_are_refused() -> None:
    bank = _clustered(100)
    index = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings())
    with pytest.raises(RetrievalIndexError, match=r"queries were embedded by .* seed is 7, expected 0"):
        index.search_records(_records(bank[:3]), _meta(seed=7), 4)
    with pytest.raises(RetrievalIndexError, match="8-dimensional, the index 16"):
        index.search(np.zeros((2, 8), np.float32), 3)
    _dist, rows = index.search_records(_records(bank[:3]), _meta(), 4, exclude_self=True)
    assert rows.shape == (3, 4) and not (rows == np.arange(3)[:, None]).any()


def test_bad_vectors_are_refused() -> None:
    bad = _clustered(10)
    bad[3, 0] = np.nan
    with pytest.raises(RetrievalIndexError, match="1 of 10 vectors hold NaN"):
        EmbeddingIndex.build(_records(bad), _meta(), IndexSettings())
    with pytest.raises(RetrievalIndexError, match="16-dimensional, their metadata says 8"):
        EmbeddingIndex.build(_records(_clustered(10)), _meta(dim=8), IndexSettings())
    with pytest.raises(ValueError, match="index kind"):
        IndexSettings("annoy")


def test_search_by_id_excludes_the_item_and_refuses_unknown_ids() -> None:
    bank = _clustered(40)
    index = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(IndexKind.IVF, nlist=1))
    _dist, rows = index.search_id("s2", "t1", 5)
    assert 9 not in rows.tolist() and len(rows) == 5  # row 9 is s2 / t1
    _, ref = exact_knn(bank, bank[9:10], 5, exclude=np.array([9]))
    assert rows.tolist() == ref[0].tolist()
    with pytest.raises(RetrievalIndexError, match="no item scenario 's99'"):
        index.search_id("s99", "t0", 3)
    with pytest.raises(RetrievalIndexError, match="matches 4 items"):
        index.search_id("s2", None, 3)


def test_k_above_the_index_size_is_clipped() -> None:
    index = EmbeddingIndex.build(_records(_clustered(5)), _meta(), IndexSettings())
    _dist, rows = index.search(_clustered(2, seed=9), 50)
    assert rows.shape == (2, 5) and sorted(rows[0].tolist()) == [0, 1, 2, 3, 4]


def test_a_missing_faiss_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(RetrievalIndexError, match="pip install faiss-cpu"):
        require_faiss()


def test_settings_survive_replace() -> None:
    settings = replace(IndexSettings(), kind="hnsw", ef_search=32)
    assert settings.kind is IndexKind.HNSW and settings.as_json()["kind"] == "hnsw"


def test_a_truncated_or_unreadable_faiss_file_is_refused(tmp_path: Path) -> None:
    EmbeddingIndex.build(_records(_clustered(100)), _meta(), IndexSettings(IndexKind.HNSW)).save(tmp_path)
    data = (tmp_path / "index.faiss").read_bytes()
    (tmp_path / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(RetrievalIndexError, match=r"index\.faiss does not match index\.json"):
        EmbeddingIndex.load(tmp_path)
    # the same truncated bytes with a manifest that agrees: FAISS itself cannot read them
    manifest = json.loads((tmp_path / "index.json").read_text())
    manifest["files"]["index.faiss"]["sha256"] = hashlib.sha256(data[: len(data) // 2]).hexdigest()
    (tmp_path / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(RetrievalIndexError, match=r"index\.faiss: not a readable FAISS index"):
        EmbeddingIndex.load(tmp_path)


def test_a_folder_whose_files_disagree_on_the_row_count_is_refused(tmp_path: Path) -> None:
    EmbeddingIndex.build(_records(_clustered(100)), _meta(), IndexSettings()).save(tmp_path)
    # one id row more, re-hashed into the manifest: only the row-count check can catch it
    table = pq.read_table(tmp_path / "ids.parquet")
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), tmp_path / "ids.parquet")
    manifest = json.loads((tmp_path / "index.json").read_text())
    manifest["files"]["ids.parquet"]["sha256"] = hashlib.sha256((tmp_path / "ids.parquet").read_bytes()).hexdigest()
    (tmp_path / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(RetrievalIndexError, match=r"index\.faiss holds 100 vectors, ids\.parquet 101 rows"):
        EmbeddingIndex.load(tmp_path)


def test_another_format_version_or_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    EmbeddingIndex.build(_records(_clustered(100)), _meta(), IndexSettings()).save(tmp_path)
    manifest = json.loads((tmp_path / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(RetrievalIndexError, match="index format version 99"):
        EmbeddingIndex.load(tmp_path)
    (tmp_path / "index.json").unlink()
    with pytest.raises(RetrievalIndexError, match=r"index\.json not found"):
        EmbeddingIndex.load(tmp_path)


def test_queries_of_another_model_are_refused_and_the_same_model_is_served() -> None:
    bank = _clustered(100)
    index = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings())
    with pytest.raises(RetrievalIndexError, match=r"model is 'other\.Model', expected 'tests\.Model'"):
        index.search_records(_records(bank[:3]), _meta(model="other.Model"), 4)
    # the cache is not part of the vector space: queries of another split are fine
    val_meta = replace(_meta(), caches=(CacheSplit("/tmp/val", "e" * 64, 4),))
    dist, rows = index.search_records(_records(bank[:3]), val_meta, 4)
    assert rows[:, 0].tolist() == [0, 1, 2] and np.allclose(dist[:, 0], 0.0, atol=1e-6)


def test_exclude_self_keeps_k_hits_and_pads_when_the_index_runs_out() -> None:
    bank = _clustered(6)
    index = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings())
    _, ref = exact_knn(bank, bank[:2], 3, exclude=np.arange(2))
    _, rows = index.search_records(_records(bank[:2]), _meta(), 3, exclude_self=True)
    assert rows.tolist() == ref.tolist()
    # every row asked for: the query's own row leaves one column empty
    dist, rows = index.search_records(_records(bank[:2]), _meta(), 10, exclude_self=True)
    assert rows.shape == (2, 6) and (rows[:, -1] == -1).all() and np.isinf(dist[:, -1]).all()
    assert all(sorted(r[:5].tolist()) == sorted(set(range(6)) - {i}) for i, r in enumerate(rows))
    # a query that is not in the index loses nothing
    outsider = _records(bank[:1])
    outsider.scenario_id[0] = "elsewhere"
    _, rows = index.search_records(outsider, _meta(), 3, exclude_self=True)
    assert rows[0, 0] == 0


@pytest.mark.parametrize("kind", list(IndexKind))
def test_search_id_finds_the_item_itself_without_exclusion(kind: IndexKind) -> None:
    bank = _clustered(400)
    index = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(kind))
    dist, rows = index.search_id("s3", "t2", 4, exclude_self=False)  # row 14
    assert rows[0] == 14 and dist[0] == pytest.approx(0.0, abs=1e-6)
    _, rows = index.search_id("s3", "t2", 4, dataset="av1")
    assert 14 not in rows.tolist() and rows.shape == (4,)
    with pytest.raises(RetrievalIndexError, match="no item scenario 's3' track 't2' of dataset 'womd'"):
        index.search_id("s3", "t2", 4, dataset="womd")


def test_load_applies_the_stored_or_overridden_search_settings(tmp_path: Path) -> None:
    bank = _clustered(2000)
    EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(IndexKind.IVF, nprobe=3)).save(tmp_path / "ivf")
    EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(IndexKind.HNSW, ef_search=40)).save(tmp_path / "hnsw")
    ivf = EmbeddingIndex.load(tmp_path / "ivf")
    assert ivf.faiss_index.nprobe == 3 and ivf.settings.nlist == default_nlist(2000) == 51
    assert EmbeddingIndex.load(tmp_path / "ivf", nprobe=7).faiss_index.nprobe == 7
    assert EmbeddingIndex.load(tmp_path / "hnsw").faiss_index.hnsw.efSearch == 40
    hnsw = EmbeddingIndex.load(tmp_path / "hnsw", ef_search=100)
    assert hnsw.faiss_index.hnsw.efSearch == 100 and hnsw.settings.ef_search == 100


def test_ivf_nprobe_covering_every_list_is_exact() -> None:
    bank, queries = _clustered(3000), _clustered(30, seed=4)
    flat = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings())
    ivf = EmbeddingIndex.build(_records(bank), _meta(), IndexSettings(IndexKind.IVF, nlist=20, nprobe=1000))
    assert ivf.faiss_index.nprobe == 20  # clipped to nlist
    np.testing.assert_array_equal(ivf.search(queries, 5)[1], flat.search(queries, 5)[1])


def test_settings_are_validated_naming_the_option() -> None:
    for changes, option in [
        ({"nprobe": 0}, "nprobe"),
        ({"ef_search": 0}, "ef_search"),
        ({"hnsw_m": 1}, "hnsw_m"),
        ({"seed": -1}, "seed"),
        ({"kind": "ivf", "nlist": 0}, "nlist"),
        ({"kind": "flat", "nlist": 8}, "nlist applies to kind=ivf"),
        ({"nprobe": 2.5}, "nprobe must be an integer"),
    ]:
        with pytest.raises(ValueError, match=option):
            IndexSettings(**changes)
    with pytest.raises(RetrievalIndexError, match="nlist=50 lists need at least as many vectors"):
        EmbeddingIndex.build(_records(_clustered(20)), _meta(), IndexSettings(IndexKind.IVF, nlist=50))
    with pytest.raises(RetrievalIndexError, match="no records"):
        EmbeddingIndex.build(EmbeddingRecords.empty(16), _meta(), IndexSettings())
    with pytest.raises(RetrievalIndexError, match="k must be an integer >= 1"):
        EmbeddingIndex.build(_records(_clustered(5)), _meta(), IndexSettings()).search(_clustered(1), 0)


def test_default_nlist_keeps_39_training_points_per_list() -> None:
    assert default_nlist(1) == 1 and default_nlist(38) == 1
    assert default_nlist(5000) == 5000 // 39  # 4 sqrt(N) = 283 would starve k-means
    assert default_nlist(10**6) == 4000


def test_exact_knn_in_chunks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    bank, queries = _clustered(300), _clustered(70, seed=2)
    exclude = np.where(np.arange(70) % 3 == 0, np.arange(70), -1)
    whole = exact_knn(bank, queries, 7, exclude=exclude)
    monkeypatch.setattr(index_module, "_EXACT_CHUNK_BYTES", 8 * 300 * 4)  # 4 queries per chunk
    chunked = exact_knn(bank, queries, 7, exclude=exclude)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (whole[1][::3] == np.arange(70)[::3, None]).any()
    assert exact_knn(bank[:3], queries, 10)[1].shape == (70, 3)  # k clipped to the bank
