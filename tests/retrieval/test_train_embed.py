"""``train_embed`` (trajectory encoder + index + retrieval scores) and ``retrieve`` (build / search / evaluate /
probe) on the synthetic AV1 cache: the files and their records, exact resume, and the refusals before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from smartpretrain.embeddings.records import read_embeddings
from smartpretrain.io.checkpoint_sources import sha256_file
from smartpretrain.retrieval.index import EmbeddingIndex
from smartpretrain.runs.embedding import embed
from smartpretrain.runs.guards import RunConfigError
from smartpretrain.runs.retrieval import RetrieveError
from smartpretrain.runs.retrieval import run as retrieve
from smartpretrain.runs.trajectory_embedding import ENCODER_MODEL, TrainEmbedError, load_encoder
from smartpretrain.runs.trajectory_embedding import run as train_embed
from tests.conftest import REPO

TINY = ["encoder.hidden_dim=16", "encoder.num_heads=2", "encoder.num_layers=1", "batch_size=16", "max_epochs=2",
        "trainer.log_every_n_steps=1", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
        "evaluate.ks=[1,4]", "window.length_s=3"]  # fmt: skip


def _cfg(name: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def _train_cfg(cache_root: Path, *overrides: str) -> DictConfig:
    return _cfg("train_embed", "data=av1", f"cache_root={cache_root}", *TINY, *overrides)


@pytest.fixture(scope="module")
def trained(av1_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("train-embed")
    return out, train_embed(_train_cfg(av1_cache), out)


def test_train_embed_writes_bank_queries_index_and_scores(trained: tuple[Path, dict], av1_cache: Path) -> None:
    out, summary = trained
    for name in ("config.yaml", "seed.json", "bank.parquet", "queries.parquet", "retrieval.json", "index/index.json"):
        assert (out / name).is_file(), name
    bank = read_embeddings(out / "bank.parquet", expected={"model": ENCODER_MODEL, "embedding_dim": 16})
    ckpt = Path(bank.metadata.checkpoint)
    assert ckpt.parent == out / "checkpoints" and bank.metadata.checkpoint_sha256 == sha256_file(ckpt)
    assert bank.metadata.model_config["window"]["num_steps"] == 30  # 3 s at the scenes' 0.1 s
    assert bank.metadata.single_cache().path == str((av1_cache / "av1" / "train").resolve())
    index = EmbeddingIndex.load(out / "index")
    assert len(index.ids) == len(bank.records) == summary["num_bank"]
    methods = {(s["method"], s["k"]) for s in summary["scores"]}
    assert methods == {(m, k) for m in ("embedding", "raw", "random") for k in (1, 4)}
    on_disk = json.loads((out / "retrieval.json").read_text())
    assert on_disk["scores"] == summary["scores"]
    # the stored vectors are the checkpoint's encoder applied to the windows (unit vectors)
    assert np.allclose(np.linalg.norm(bank.records.vector, axis=1), 1.0, atol=1e-5)
    encoder = load_encoder(ckpt)
    assert encoder.config.num_steps == 30 and not encoder.training


def test_raw_coordinates_retrieve_the_query_itself_at_k1(trained: tuple[Path, dict]) -> None:
    # bank = train and queries = val are disjoint, so raw k=1 is not 0; but raw beats random at every k
    scores = {(s["method"], s["k"]): s for s in trained[1]["scores"]}
    for k in (1, 4):
        assert scores[("raw", k)][f"minFDE@{k}"] < scores[("random", k)][f"minFDE@{k}"]


def test_train_embed_resumes_exactly_after_a_kill(av1_cache: Path, tmp_path: Path) -> None:
    from tests.runs.test_exact_resume import _killed_run

    exact = ["max_epochs=3", "batch_size=8", "trainer.deterministic=true", "checkpoint.every_n_train_steps=1",
             "checkpoint.every_n_minutes=null"]  # fmt: skip
    whole = tmp_path / "whole"
    train_embed(_train_cfg(av1_cache, *exact), whole)
    per_epoch = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] // 3
    assert per_epoch >= 2, "the test needs a kill inside an epoch"
    step = per_epoch + 1  # in the second epoch, after the hard phase's first steps
    overrides = ["data=av1", f"cache_root={av1_cache}", *TINY, *exact]
    last = _killed_run("smartpretrain.train_embed", overrides, tmp_path / "killed", step)
    resumed = tmp_path / "resumed"
    train_embed(_train_cfg(av1_cache, *exact, f"resume={last}"), resumed)
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (
        json.loads((whole / "retrieval.json").read_text())["scores"]
        == json.loads((resumed / "retrieval.json").read_text())["scores"]
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["window.length_s=10"], "window.start_s=0.0 \\+ window.length_s=10"),
        (["objective.similarity=dtw"], "objective.similarity"),
        (["index.kind=annoy"], "index.kind"),
        (["window.min_valid_fraction=1.5"], "min_valid_fraction"),
        (["train_split=nope"], "does not exist"),
        (["encoder.embedding_dim=0"], "embedding_dim"),
    ],
)
def test_train_embed_refuses_bad_options_before_any_work(
    av1_cache: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(RunConfigError, match=message):
        train_embed(_train_cfg(av1_cache, *overrides), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def _retrieve(tmp_path: Path, *overrides: str) -> dict:
    return retrieve(_cfg("retrieve", "data=av1", *overrides), tmp_path)


def test_build_search_by_id_and_by_trajectory(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    built = _retrieve(tmp_path / "b", "action=build", f"embeddings={out / 'bank.parquet'}",
                      f"index={tmp_path / 'hnsw'}", "index_settings.kind=hnsw")  # fmt: skip
    assert built["kind"] == "hnsw"
    bank = read_embeddings(out / "bank.parquet").records
    sid, tid = bank.scenario_id[3], bank.track_id[3]
    hits = _retrieve(tmp_path / "s", "action=search", f"index={out / 'index'}", f"query.scenario_id={sid}",
                     f"query.track_id={tid}", "k=3")["hits"]  # fmt: skip
    assert len(hits) == 3 and (sid, tid) not in {(h["scenario_id"], h["track_id"]) for h in hits}
    # brute force over the bank: the same three neighbours
    d = ((bank.vector - bank.vector[3]) ** 2).sum(axis=1)
    d[3] = np.inf
    want = [(bank.scenario_id[i], bank.track_id[i]) for i in np.argsort(d, kind="stable")[:3]]
    assert [(h["scenario_id"], h["track_id"]) for h in hits] == want
    line = [[0.5 * t, 0.0] for t in range(30)]
    by_traj = _retrieve(tmp_path / "t", "action=search", f"index={out / 'index'}", f"query.trajectory={line}", "k=2")
    assert len(by_traj["hits"]) == 2


def test_search_by_a_trajectory_of_the_wrong_length_is_refused(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    with pytest.raises(RetrieveError, match="30 \\[x, y\\] points"):
        _retrieve(tmp_path, "action=search", f"index={out / 'index'}", "query.trajectory=[[0,0],[1,0]]")


def test_evaluate_scores_and_plots(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, summary = trained
    got = _retrieve(tmp_path, "action=evaluate", f"index={out / 'index'}", f"queries={out / 'queries.parquet'}",
                    "ks=[1,4]", "plot=true", "max_queries=null")  # fmt: skip
    assert (tmp_path / "retrieval.json").is_file()
    assert (tmp_path / "query_neighbours.png").stat().st_size > 0 and (tmp_path / "embedding_map.png").is_file()
    if summary["num_queries"] == got["num_queries"]:  # the same queries: the same scores as train_embed's
        assert got["scores"] == summary["scores"]


def test_evaluate_refuses_queries_of_another_encoder(av1_cache: Path, trained: tuple[Path, dict], tmp_path: Path):
    other = tmp_path / "other"
    train_embed(_train_cfg(av1_cache, "encoder.embedding_dim=4", "max_epochs=1"), other)
    out, _ = trained
    with pytest.raises(ValueError, match="queries were embedded by"):
        _retrieve(tmp_path / "e", "action=evaluate", f"index={out / 'index'}", f"queries={other / 'queries.parquet'}")


def test_probe_matches_a_brute_force_knn_forecast(av1_cache: Path, tmp_path: Path) -> None:
    tiny_mae = ["model=forecast_mae", "model.embed_dim=16", "model.encoder_depth=1", "model.num_heads=2"]
    files = {}
    for split in ("train", "val"):
        cfg = _cfg("embed", "data=av1", f"cache_root={av1_cache}", "num_workers=0", "batch_size=2", f"split={split}",
                   *tiny_mae, f"output={tmp_path / (split + '.parquet')}")  # fmt: skip
        files[split] = embed(cfg, tmp_path / f"embed_{split}").path
    got = _retrieve(tmp_path / "p", "action=probe", f"bank={files['train']}", f"queries={files['val']}", "k=3")
    scores = {s["method"]: s for s in got["scores"]}
    assert set(scores) == {"embedding", "raw", "random"} and scores["embedding"]["num_queries"] == 4
    # by hand: the 3 nearest train focal embeddings' futures, each in its own frame
    from smartpretrain.embeddings.trajectories import agent_futures

    bank, queries = read_embeddings(files["train"]).records, read_embeddings(files["val"]).records
    bank_future, _ = agent_futures(av1_cache / "av1" / "train", bank, 30)
    target, _ = agent_futures(av1_cache / "av1" / "val", queries, 30)
    fde = []
    for q in range(len(queries)):
        near = np.argsort(((bank.vector - queries.vector[q]) ** 2).sum(axis=1), kind="stable")[:3]
        fde.append(np.linalg.norm(bank_future[near, -1] - target[q, -1], axis=-1).min())
    assert scores["embedding"]["minFDE_3"] == pytest.approx(float(np.mean(fde)), rel=1e-5)


def test_probe_refuses_files_of_two_models(av1_cache: Path, tmp_path: Path) -> None:
    files = []
    for seed in (1, 2):
        cfg = _cfg("embed", "data=av1", f"cache_root={av1_cache}", "num_workers=0", "batch_size=2", "split=val",
                   "model=forecast_mae", "model.embed_dim=16", "model.encoder_depth=1", "model.num_heads=2",
                   f"seed={seed}", f"output={tmp_path / f'{seed}.parquet'}")  # fmt: skip
        files.append(embed(cfg, tmp_path / f"e{seed}").path)
    with pytest.raises(RetrieveError, match="seed"):
        _retrieve(tmp_path / "p", "action=probe", f"bank={files[0]}", f"queries={files[1]}")


def test_retrieve_cli_gives_one_line_for_a_missing_option(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "smartpretrain.retrieve", "action=probe",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "smartpretrain.retrieve: error: action=probe needs bank=<...>"


def test_train_embed_refuses_a_split_without_windows(av1_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainEmbedError, match="nothing to learn from"):
        train_embed(_train_cfg(av1_cache, "window.agents=focal", "limit_scenes=1"), tmp_path)


@pytest.fixture(scope="module")
def av1_av2_cache(av1_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``{root}/av1`` (the synthetic AV1 cache) beside ``{root}/av2`` (3 + 2 synthetic AV2 scenes)."""
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av2 import Av2Converter
    from smartpretrain.data.synthetic import generate_av2

    raw, root = tmp_path_factory.mktemp("raw-av2"), tmp_path_factory.mktemp("mix")
    generate_av2(raw, "train", 3, seed=1)
    generate_av2(raw, "val", 2, seed=1, start_index=100)
    for split in ("train", "val"):
        convert_split(Av2Converter(raw, split), root / "av2" / split, ConversionSettings(progress=False))
    (root / "av1").symlink_to(av1_cache / "av1", target_is_directory=True)
    return root


def test_train_embed_on_a_mixture_banks_every_component_and_evaluate_recuts_them(
    av1_av2_cache: Path, tmp_path: Path
) -> None:
    mix = ["data=mix_av1_av2_womd", "~data.components.womd"]
    out = tmp_path / "run"
    summary = train_embed(_cfg("train_embed", f"cache_root={av1_av2_cache}", *TINY, *mix, "max_epochs=1"), out)
    assert set(summary["bank_by_dataset"]) == {"av1", "av2"} and sum(summary["bank_by_dataset"].values()) == len(
        EmbeddingIndex.load(out / "index").ids
    )
    bank = read_embeddings(out / "bank.parquet")
    caches = [Path(c.path) for c in bank.metadata.caches]
    assert caches == [(av1_av2_cache / name / "train").resolve() for name in ("av1", "av2")]
    assert [c.num_scenes for c in bank.metadata.caches] == [8, 3]
    got = _retrieve(tmp_path / "e", "action=evaluate", f"index={out / 'index'}", f"queries={out / 'queries.parquet'}",
                    "ks=[1,4]", "max_queries=null")  # fmt: skip
    assert got["num_bank"] == summary["num_bank"]
    if got["num_queries"] == summary["num_queries"]:
        assert got["scores"] == summary["scores"]
    with pytest.raises(RetrieveError, match="action=probe takes the vectors of one cache split"):
        _retrieve(tmp_path / "p", "action=probe", f"bank={out / 'bank.parquet'}", f"queries={out / 'bank.parquet'}")


def test_mixture_weights_set_the_share_of_windows_per_epoch() -> None:
    from smartpretrain.data.datamodule import MixtureSpec
    from smartpretrain.embeddings.trajectories import TrajectorySet
    from smartpretrain.runs.trajectory_embedding import WindowDataModule

    def windows(n: int, name: str) -> TrajectorySet:
        return TrajectorySet([f"{name}{i}" for i in range(n)], ["0"] * n, [name] * n, ["focal"] * n,
                             np.zeros(n), np.zeros((n, 5, 2)), np.ones((n, 5), bool), np.zeros(n))  # fmt: skip

    parts = [windows(40, "a"), windows(200, "b")]
    data = WindowDataModule(parts, windows(4, "v"), batch_size=10, seed=0, num_workers=0,
                            mixture=MixtureSpec(weights=[3.0, 1.0], num_samples=100, seed=0))  # fmt: skip
    drawn = np.concatenate(data.batch_sampler(num_replicas=1, rank=0).batches(0))
    assert len(drawn) == 100 and (drawn < 40).sum() == 75  # 3 : 1, although "b" has 5x the windows
    plain = WindowDataModule(parts, windows(4, "v"), batch_size=10, seed=0, num_workers=0)
    assert sorted(np.concatenate(plain.batch_sampler(num_replicas=1, rank=0).batches(0))) == list(range(240))


def test_a_mixture_of_two_timelines_is_refused_naming_both() -> None:
    from smartpretrain.data.sources import DataSource
    from smartpretrain.runs.trajectory_embedding import SplitInfo, window_spec

    splits = [SplitInfo(DataSource("av1", Path("/c/av1/train"), 20), 0.1, 50, 8),
              SplitInfo(DataSource("eth", Path("/c/eth/train"), 8), 0.4, 20, 8)]  # fmt: skip
    cfg = _cfg("train_embed", "window.length_s=2")
    with pytest.raises(TrainEmbedError, match=r"/c/av1/train has steps of 0.1 s and /c/eth/train of 0.4 s") as info:
        window_spec(cfg, splits)
    assert "\n" not in str(info.value)
