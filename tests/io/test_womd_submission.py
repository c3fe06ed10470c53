"""WOMD challenge submission (``.tar.gz`` of ``MotionChallengeSubmission``): the schema's wire numbers, round trip,
the 2 Hz sampling, every refusal, the atomic write, the builder, and ``./test.sh data=womd`` on the real fixture."""

from __future__ import annotations

import struct
import subprocess
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from smartpretrain.data.protos import womd_message
from smartpretrain.io.womd_submission import (
    WOMD_SAMPLED_STEPS,
    WomdSubmissionBuilder,
    WomdSubmissionMetadata,
    check_required,
    format_parameter_count,
    read_womd_submission,
    sample_womd_steps,
    write_womd_submission,
)
from tests.conftest import REPO

WOMD_FIXTURES = REPO.parent / "shared" / "fixtures" / "womd"
SCENARIO_FILE = WOMD_FIXTURES / "motion_data_one_scenario.tfrecord"

META = WomdSubmissionMetadata(
    account_name="someone@example.com",
    unique_method_name="smartpretrain-unit-test",
    authors=("A. Author", "B. Author"),
    affiliation="Test Lab",
    description="constant offsets, for the round trip",
    method_link="https://example.com/method",
    uses_lidar_data=False,
    uses_camera_data=True,
    uses_public_model_pretraining=False,
    public_model_names=(),
    num_model_parameters="7M",
)


def track(rng: np.random.Generator, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A global-frame prediction near (8000, -2000): K trajectories of 80 steps (float64), softmax probabilities."""
    start = np.array([8000.0, -2000.0]) + rng.normal(size=2) * 100
    traj = start + np.cumsum(rng.normal(size=(k, 80, 2)), axis=1)
    logits = rng.normal(size=k)
    return traj, np.exp(logits) / np.exp(logits).sum()


def predictions(num_scenarios: int = 5, seed: int = 0) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Scenarios with 1 to 3 tracks each and K from 1 to 6 (ids as the converter stores them: decimal strings)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for i in range(num_scenarios):
        out[f"{i:04x}c0ffee{i}"] = {str(100 * i + j): track(rng, k=1 + (i + j) % 6) for j in range(1 + i % 3)}
    return out


def files_in(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- the schema --------------------------------------------------------------------------------------------------


def test_schema_has_the_official_field_numbers() -> None:
    """Field numbers, types and the oneof as in Waymo's public motion_submission.proto (what its server decodes)."""
    expected = {
        "Trajectory": {"center_x": 2, "center_y": 3},
        "ScoredTrajectory": {"trajectory": 1, "confidence": 2},
        "SingleObjectPrediction": {"object_id": 1, "trajectories": 2},
        "PredictionSet": {"predictions": 1},
        "ObjectTrajectory": {"object_id": 1, "trajectory": 2},
        "ScoredJointTrajectory": {"trajectories": 2, "confidence": 3},
        "JointPrediction": {"joint_trajectories": 1},
        "ChallengeScenarioPredictions": {"scenario_id": 1, "single_predictions": 2, "joint_prediction": 3},
        "MotionChallengeSubmission": {
            "scenario_predictions": 1,
            "submission_type": 2,
            "account_name": 3,
            "unique_method_name": 4,
            "authors": 5,
            "affiliation": 6,
            "description": 7,
            "method_link": 8,
            "uses_lidar_data": 9,
            "uses_camera_data": 10,
            "uses_public_model_pretraining": 11,
            "num_model_parameters": 12,
            "public_model_names": 13,
        },
    }
    for name, fields in expected.items():
        descriptor = womd_message(name).DESCRIPTOR
        assert descriptor.full_name == f"waymo.open_dataset.{name}"
        assert {f.name: f.number for f in descriptor.fields} == fields, name
    fd = FieldDescriptor
    assert womd_message("Trajectory").DESCRIPTOR.fields_by_name["center_x"].type == fd.TYPE_FLOAT
    assert womd_message("ScoredTrajectory").DESCRIPTOR.fields_by_name["confidence"].type == fd.TYPE_FLOAT
    assert womd_message("SingleObjectPrediction").DESCRIPTOR.fields_by_name["object_id"].type == fd.TYPE_INT32
    submission = womd_message("MotionChallengeSubmission").DESCRIPTOR
    assert submission.fields_by_name["num_model_parameters"].type == fd.TYPE_STRING
    assert submission.fields_by_name["uses_lidar_data"].type == fd.TYPE_BOOL
    kinds = submission.enum_types_by_name["SubmissionType"]
    assert {v.name: v.number for v in kinds.values} == {
        "UNKNOWN": 0,
        "MOTION_PREDICTION": 1,
        "INTERACTION_PREDICTION": 2,
    }
    oneof = womd_message("ChallengeScenarioPredictions").DESCRIPTOR.oneofs_by_name["prediction_set"]
    assert sorted(f.name for f in oneof.fields) == ["joint_prediction", "single_predictions"]
    # a private pool: never the default one, where an installed waymo-open-dataset registers the same names
    assert submission.file.pool is not descriptor_pool.Default()


def test_trajectory_floats_are_packed_on_the_wire() -> None:
    """``[packed = true]`` as in the official schema: one length-delimited field 2 holding the float32 values."""
    message = womd_message("Trajectory")(center_x=[1.5, -2.0], center_y=[3.0])
    data = message.SerializeToString()
    assert data == b"\x12\x08" + struct.pack("<2f", 1.5, -2.0) + b"\x1a\x04" + struct.pack("<f", 3.0)


# --- round trip ---------------------------------------------------------------------------------------------------


def test_write_then_read_back_every_field(tmp_path: Path) -> None:
    preds = predictions(5)
    path = write_womd_submission(preds, tmp_path / "out" / "submission.tar.gz", META, scenarios_per_shard=2)
    assert path == tmp_path / "out" / "submission.tar.gz"
    assert files_in(path.parent) == ["submission.tar.gz"]  # no temp file left
    with tarfile.open(path, "r:gz") as tar:
        names = tar.getnames()
    assert names == [f"submission.bin-{i:05d}-of-00003" for i in range(3)]  # 5 scenarios, 2 per member

    metadata, loaded = read_womd_submission(path)
    assert metadata == META
    assert list(loaded) == list(preds)  # scenario order
    for scenario_id, tracks in preds.items():
        assert list(loaded[scenario_id]) == list(tracks)  # track order, ids as strings
        for track_id, (traj, prob) in tracks.items():
            got_traj, got_conf = loaded[scenario_id][track_id]
            assert got_traj.dtype == np.float32 and got_traj.shape == (len(traj), 16, 2)
            np.testing.assert_array_equal(got_traj, traj[:, 4::5].astype(np.float32))  # exact: float32 on the wire
            np.testing.assert_array_equal(got_conf, prob.astype(np.float32))  # mode order kept


def test_every_member_is_a_complete_submission(tmp_path: Path) -> None:
    """Each member parses alone, is a motion-prediction submission and carries the metadata; the uses_* flags are
    present even when false (Waymo's server requires them)."""
    path = write_womd_submission(predictions(3), tmp_path / "s.tar.gz", META, scenarios_per_shard=1)
    cls = womd_message("MotionChallengeSubmission")
    with tarfile.open(path, "r:gz") as tar:
        members = [tar.extractfile(m).read() for m in tar.getmembers()]  # type: ignore[union-attr]
    assert len(members) == 3
    for data in members:
        message = cls.FromString(data)
        assert message.submission_type == cls.DESCRIPTOR.enum_values_by_name["MOTION_PREDICTION"].number == 1
        assert message.account_name == META.account_name and list(message.authors) == list(META.authors)
        for flag in ("uses_lidar_data", "uses_camera_data", "uses_public_model_pretraining"):
            assert message.HasField(flag), flag
        assert message.num_model_parameters == "7M"
        (entry,) = message.scenario_predictions
        assert entry.WhichOneof("prediction_set") == "single_predictions"


def test_reader_accepts_one_bare_serialized_message(tmp_path: Path) -> None:
    path = write_womd_submission(predictions(2), tmp_path / "s.tar.gz", META)
    with tarfile.open(path, "r:gz") as tar:
        (member,) = tar.getmembers()
        (tmp_path / "one.bin").write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
    assert read_womd_submission(tmp_path / "one.bin")[1].keys() == read_womd_submission(path)[1].keys()


# --- the 2 Hz sampling -------------------------------------------------------------------------------------------


def test_sampling_takes_future_steps_4_9_to_79(tmp_path: Path) -> None:
    assert WOMD_SAMPLED_STEPS == (4, 9, 14, 19, 24, 29, 34, 39, 44, 49, 54, 59, 64, 69, 74, 79)
    # the scenario's steps: future step i is scenario step current (10) + 1 + i -> 15, 20, ..., 90 (0.5 s ... 8 s)
    assert [10 + 1 + s for s in WOMD_SAMPLED_STEPS] == list(range(15, 91, 5))
    steps = np.arange(80, dtype=np.float64)
    traj = np.stack([np.stack([steps + 1000 * k, -steps], axis=-1) for k in range(3)])  # x encodes the step
    np.testing.assert_array_equal(sample_womd_steps(traj)[1, :, 0], np.array(WOMD_SAMPLED_STEPS) + 1000)
    path = write_womd_submission({"scn": {"7": (traj, np.full(3, 1 / 3))}}, tmp_path / "s.tar.gz", META)
    got, _ = read_womd_submission(path)[1]["scn"]["7"]
    for k in range(3):
        assert got[k, :, 0].tolist() == [s + 1000 * k for s in WOMD_SAMPLED_STEPS]
        assert got[k, :, 1].tolist() == [-s for s in WOMD_SAMPLED_STEPS]


# --- refusals -----------------------------------------------------------------------------------------------------


W = r"track '12' of scenario 'scn-a': "  # how every row-level message starts


def _bad(
    k: int = 6,
    steps: int = 80,
    traj: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    scenario: str = "scn-a",
    track: object = "12",
) -> tuple[list[str], list[object], np.ndarray, np.ndarray]:
    """The arguments of one :meth:`WomdSubmissionBuilder.add` of a single row, with one thing wrong."""
    if traj is None:
        traj = np.zeros((1, k, steps, 2))
    if prob is None:
        prob = np.full((1, k), 1.0 / max(k, 1))
    return [scenario], [track], traj, prob


def _nan_traj() -> np.ndarray:
    traj = np.zeros((1, 6, 80, 2))
    traj[0, 2, 40, 1] = np.nan
    return traj


ROW_CASES = [
    (_bad(steps=60), W + r"trajectories must have shape \[K, 80, 2\].*got \[6, 60, 2\]"),
    (_bad(steps=91), W + r".*80 future steps"),
    (_bad(k=7), W + r"7 modes, the WOMD challenge accepts 1 to 6"),
    (_bad(k=0), W + r"0 modes"),
    (_bad(traj=_nan_traj()), W + r"trajectories contain NaN.*modes \[2\]"),
    (_bad(traj=np.full((1, 6, 80, 2), 1e39)), W + r".*beyond float32"),
    (_bad(prob=np.array([[np.inf, 0, 0, 0, 0, 0]])), W + r"probabilities contain NaN or inf"),
    (_bad(prob=np.array([[-0.1, 0.3, 0.2, 0.2, 0.2, 0.2]])), W + r"negative probabilities"),
    (_bad(prob=np.full((1, 5), 0.2)), W + r"probabilities must have shape \[6\] \(one per mode\), got \[5\]"),
    (_bad(track="veh-12"), r"track 'veh-12' of scenario 'scn-a': track id 'veh-12' is not an integer"),
    (_bad(track="1.5"), r"track '1.5' of scenario 'scn-a': track id '1.5' is not an integer"),
    (_bad(track=str(2**31)), r"track '2147483648' of scenario 'scn-a': .*outside int32"),
    (_bad(track=True), r"track True of scenario 'scn-a': track id True is not an integer"),
    (_bad(scenario=""), r"scenario_id must be a non-empty string, got '' \(track '12'\)"),
]


@pytest.mark.parametrize(("args", "message"), ROW_CASES)
def test_bad_rows_are_refused_naming_scenario_and_track(args, message: str, tmp_path: Path) -> None:
    builder = WomdSubmissionBuilder(META)
    with pytest.raises(ValueError, match=message):
        builder.add(*args)
    assert len(builder) == 0 and builder.num_scenarios == 0
    (scenario_id,), (track_id,), traj, prob = args
    with pytest.raises(ValueError, match=message):  # the writer makes the same checks
        write_womd_submission({scenario_id: {track_id: (traj[0], prob[0])}}, tmp_path / "s.tar.gz", META)
    assert files_in(tmp_path) == []


def test_bad_batch_shapes_are_refused() -> None:
    builder = WomdSubmissionBuilder(META)
    scenario_ids, track_ids, traj, _ = _bad()
    with pytest.raises(ValueError, match=r"probabilities must have shape \[N=1, K\].*track '12' of scenario 'scn-a'"):
        builder.add(scenario_ids, track_ids, traj, np.full((2, 6), 0.2))
    with pytest.raises(ValueError, match=r"trajectories must have shape \[N=1, K, 80, 2\], got \[6, 80, 2\]"):
        builder.add(scenario_ids, track_ids, traj[0], np.full((1, 6), 0.2))
    assert len(builder) == 0


def test_add_is_all_or_nothing_and_refuses_duplicates() -> None:
    rng = np.random.default_rng(1)
    builder = WomdSubmissionBuilder(META)
    (t1, p1), (t2, p2) = track(rng), track(rng)
    builder.add(["scn", "scn"], ["1", "2"], torch.from_numpy(np.stack([t1, t2])), torch.from_numpy(np.stack([p1, p2])))
    assert (len(builder), builder.num_scenarios) == (2, 1)
    bad = np.stack([t1, t1])
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="track '4' of scenario 'scn'"):
        builder.add(["scn", "scn"], ["3", "4"], bad, np.stack([p1, p1]))
    assert len(builder) == 2 and set(builder.predictions["scn"]) == {"1", "2"}  # "3" was not kept
    with pytest.raises(ValueError, match=r"duplicate prediction for track '2' of scenario 'scn'"):
        builder.add(["scn"], ["2"], t1[None], p1[None])
    with pytest.raises(ValueError, match=r"duplicate prediction for track '05' of scenario 'other'"):
        builder.add(["other", "other"], ["5", "05"], np.stack([t1, t1]), np.stack([p1, p1]))  # same object_id
    with pytest.raises(ValueError, match=r"2 scenario ids but 1 track ids"):
        builder.add(["a", "b"], ["1"], np.stack([t1, t1]), np.stack([p1, p1]))
    assert len(builder) == 2


def test_required_tracks_missing_or_extra_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    builder = WomdSubmissionBuilder(META)
    trajectories = np.stack([track(rng)[0] for _ in range(3)])
    builder.add(["s1", "s1", "s2"], ["1", "2", "3"], trajectories, np.full((3, 6), 1 / 6))
    out = tmp_path / "submission.tar.gz"
    with pytest.raises(ValueError, match=r"scenario 's1': no prediction for tracks to predict \[9\]"):
        builder.write(out, required={"s1": {"1", "2", "9"}, "s2": {"3"}})
    with pytest.raises(ValueError, match=r"scenario 's1': predictions for tracks \[2\] that are not tracks to pred"):
        builder.write(out, required={"s1": {"1"}, "s2": {"3"}})
    with pytest.raises(ValueError, match=r"scenario 's2' is not a required scenario \(predictions for tracks \[3\]\)"):
        builder.write(out, required={"s1": {"1", "2"}})
    with pytest.raises(ValueError, match=r"scenario 's3': no prediction for tracks to predict \[4\] \(and 1 more"):
        builder.write(out, required={"s3": {"4"}, "s1": {"1"}, "s2": {"3"}})
    assert files_in(tmp_path) == []
    builder.write(out, required={"s1": {"1", "2"}, "s2": {3}})  # ints or strings
    assert list(read_womd_submission(out)[1]) == ["s1", "s2"]
    check_required({"s": ["7"]}, {"s": {7}, "empty": set()})  # a scenario with nothing to predict needs nothing


def test_metadata_checks_and_the_unset_warning(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"num_model_parameters must be an integer and a unit suffix"):
        WomdSubmissionMetadata(num_model_parameters="7 million")
    with pytest.raises(ValueError, match=r"unknown submission metadata acount_name"):
        WomdSubmissionMetadata.from_mapping({"acount_name": "x"})
    with pytest.raises(ValueError, match=r"uses_lidar_data must be true or false"):
        WomdSubmissionMetadata(uses_lidar_data="no")  # type: ignore[arg-type]
    assert WomdSubmissionMetadata(num_model_parameters=7_300_000).num_model_parameters == "7M"
    assert [format_parameter_count(n) for n in (0, 1_234, 999_999, 2_500_000_000)] == ["0K", "1K", "1000K", "2B"]
    assert WomdSubmissionMetadata.from_mapping({"authors": "Solo", "account_name": None}).authors == ("Solo",)
    with pytest.warns(UserWarning) as caught:
        write_womd_submission(predictions(1), tmp_path / "s.tar.gz", account_name="me@example.com")
    (warning,) = caught
    text = str(warning.message)
    assert "\n" not in text and "unique_method_name, authors, affiliation" in text and "account_name" not in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_womd_submission(predictions(1), tmp_path / "s.tar.gz", META)  # all set: no warning
        write_womd_submission(predictions(1), tmp_path / "s.tar.gz", warn_unset=False)
    assert read_womd_submission(tmp_path / "s.tar.gz")[0] == WomdSubmissionMetadata()


def test_empty_and_bad_shard_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no predictions to write"):
        WomdSubmissionBuilder(META).write(tmp_path / "s.tar.gz")
    with pytest.raises(ValueError, match="scenarios_per_shard must be a positive integer"):
        WomdSubmissionBuilder(META, scenarios_per_shard=0)
    assert files_in(tmp_path) == []


# --- atomic write -------------------------------------------------------------------------------------------------


def test_a_failing_write_leaves_no_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "submission.tar.gz"
    calls = []

    def failing_addfile(self, tarinfo, fileobj=None) -> None:
        calls.append(tarinfo.name)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, tarinfo, fileobj)

    original = tarfile.TarFile.addfile
    monkeypatch.setattr(tarfile.TarFile, "addfile", failing_addfile)
    with pytest.raises(OSError, match="disk full"):
        write_womd_submission(predictions(3), out, META, scenarios_per_shard=1)
    assert len(calls) == 2 and files_in(tmp_path) == []  # neither the archive nor its hidden temp file

    monkeypatch.setattr(tarfile.TarFile, "addfile", original)
    write_womd_submission(predictions(2), out, META)
    before = out.read_bytes()
    calls.clear()
    monkeypatch.setattr(tarfile.TarFile, "addfile", failing_addfile)
    with pytest.raises(OSError, match="disk full"):
        write_womd_submission(predictions(3, seed=5), out, META, scenarios_per_shard=1)
    assert out.read_bytes() == before and files_in(tmp_path) == ["submission.tar.gz"]  # the old file, untouched


# --- end to end: ./test.sh data=womd on the real fixture ---------------------------------------------------------


@pytest.fixture(scope="module")
def womd_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture scenario converted into ``{root}/womd/test`` (the split test.sh reads)."""
    if not SCENARIO_FILE.exists():
        pytest.skip(f"{WOMD_FIXTURES} not found: the real WOMD fixtures live in ../shared beside the checkout")
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.womd import WomdConverter

    root = tmp_path_factory.mktemp("cache")
    convert_split(WomdConverter(SCENARIO_FILE, "test"), root / "womd" / "test", ConversionSettings(progress=False))
    return root


def test_focal_scope_is_refused_for_the_womd_file(womd_cache: Path, tmp_path: Path) -> None:
    from smartpretrain.config import compose_config
    from smartpretrain.runs.evaluation import EvaluationError, evaluate

    overrides = ["data=womd", "model=constant_velocity", "ckpt_path=null", f"cache_root={womd_cache}", "mode=test"]
    assert compose_config("evaluate", overrides).eval_scope == "scored"  # the WOMD default
    with pytest.raises(EvaluationError, match=r"needs every track to predict.*pass eval_scope=scored"):
        evaluate(compose_config("evaluate", [*overrides, "eval_scope=focal"]), tmp_path)
    with pytest.raises(EvaluationError, match=r"num_model_parameters must be an integer and a unit suffix"):
        evaluate(compose_config("evaluate", [*overrides, "submission.num_model_parameters=lots"]), tmp_path)
    assert not (tmp_path / "submission.tar.gz").exists()


@pytest.mark.slow
def test_test_sh_writes_the_womd_submission(womd_cache: Path, tmp_path: Path) -> None:
    from smartpretrain.data.converters.womd import open_scenarios

    run_dir = tmp_path / "test"
    args = ["data=womd", "model=constant_velocity", "ckpt_path=null", f"cache_root={womd_cache}", "num_workers=0",
            f"hydra.run.dir={run_dir}", "submission.account_name=someone@example.com",
            "submission.unique_method_name=cv-baseline"]  # fmt: skip
    env = {"SMARTPRETRAIN_CACHE": str(tmp_path / "dl"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(REPO / "test.sh"), *args], capture_output=True, text=True, timeout=300, env=env, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = run_dir / "submission.tar.gz"
    assert "wrote " in proc.stdout and "submission.tar.gz" in proc.stdout
    unset = [line for line in proc.stderr.splitlines() if "WOMD submission metadata unset" in line]
    assert len(unset) == 1 and "authors" in unset[0] and "account_name" not in unset[0]  # one line, once

    (scenario,) = open_scenarios(SCENARIO_FILE)
    tracks = scenario.tracks
    to_predict = [tracks[r.track_index] for r in scenario.tracks_to_predict]
    assert len(to_predict) == 3
    metadata, loaded = read_womd_submission(path)
    assert (metadata.account_name, metadata.unique_method_name) == ("someone@example.com", "cv-baseline")
    assert metadata.num_model_parameters == "0K"  # counted from the model: constant velocity has no parameters
    assert list(loaded) == [scenario.scenario_id]
    got = loaded[scenario.scenario_id]
    assert set(got) == {str(t.id) for t in to_predict}
    current = int(scenario.current_time_index)
    for t in to_predict:
        trajectories, confidences = got[str(t.id)]
        assert trajectories.shape == (1, 16, 2) and confidences.tolist() == [1.0]  # one mode, probability 1
        state = t.states[current]
        # global frame: 0.5 s of constant velocity stays within a few metres of the track's current position
        assert np.linalg.norm(trajectories[0, 0] - np.array([state.center_x, state.center_y])) < 20.0
