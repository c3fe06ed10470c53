"""AV2 submission parquet: round trip through av2's ChallengeSubmission, validation, atomic write, builder."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from av2.datasets.motion_forecasting.eval.submission import SUBMISSION_COL_NAMES, ChallengeSubmission

from smartpretrain.io.submission import (
    SubmissionBuilder,
    read_av2_submission,
    write_av2_submission,
)

# av2's from_parquet calls DataFrame.sort_values(inplace=True), deprecated in recent pandas: not our concern here
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


def track(rng: np.random.Generator, k: int = 6, horizon: int = 60):
    """A plausible global-frame prediction: K trajectories near (5000, -3000), distinct softmax probabilities."""
    start = np.array([5000.0, -3000.0]) + rng.normal(size=2) * 100
    traj = start + np.cumsum(rng.normal(size=(k, horizon, 2)), axis=1)
    logits = rng.normal(size=k) * 2
    prob = np.exp(logits) / np.exp(logits).sum()
    return traj, prob


def single_agent_predictions(num_scenarios: int = 5, k: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {f"scenario-{i:03d}": {f"{1000 + i}": track(rng, k)} for i in range(num_scenarios)}


def assert_round_trip(predictions, path) -> None:
    """Read back with av2 and compare: modes come in decreasing probability, trajectories follow their mode."""
    loaded = ChallengeSubmission.from_parquet(path)  # also runs av2's validation (__post_init__)
    assert set(loaded.predictions) == set(predictions)
    for scenario_id, tracks in predictions.items():
        probabilities, trajectories = loaded.predictions[scenario_id]
        assert set(trajectories) == set(tracks)
        for track_id, (traj, prob) in tracks.items():
            order = np.argsort(-prob, kind="stable")
            np.testing.assert_allclose(probabilities, prob[order] / prob.sum(), rtol=0, atol=1e-12)
            np.testing.assert_array_equal(trajectories[track_id], np.asarray(traj, dtype=np.float64)[order])


def test_write_then_read_back(tmp_path):
    predictions = single_agent_predictions()
    path = write_av2_submission(predictions, tmp_path / "out" / "submission.parquet")
    assert path == tmp_path / "out" / "submission.parquet" and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["submission.parquet"]  # no temp file left
    assert_round_trip(predictions, path)
    # our own reader gives the input format back
    again = read_av2_submission(path)
    for scenario_id, tracks in predictions.items():
        for track_id, (traj, prob) in tracks.items():
            order = np.argsort(-prob)
            got_traj, got_prob = again[scenario_id][track_id]
            np.testing.assert_array_equal(got_traj, traj[order])
            np.testing.assert_allclose(got_prob, prob[order], atol=1e-12)


def test_file_layout_is_what_av2_expects(tmp_path):
    predictions = single_agent_predictions(num_scenarios=3, k=4, seed=1)
    path = write_av2_submission(predictions, tmp_path / "submission.parquet")
    df = pd.read_parquet(path)
    assert list(df.columns) == SUBMISSION_COL_NAMES
    assert len(df) == 3 * 4
    assert all(len(x) == 60 for x in df["predicted_trajectory_x"])
    assert all(len(y) == 60 for y in df["predicted_trajectory_y"])
    sums = df.groupby(["scenario_id", "track_id"])["probability"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-12)
    # rows of each track in decreasing probability
    for _, rows in df.groupby("scenario_id"):
        assert (np.diff(rows["probability"].to_numpy()) <= 0).all()
    assert_round_trip(predictions, path)


def test_joint_worlds_with_several_tracks(tmp_path):
    rng = np.random.default_rng(2)
    traj_a, prob = track(rng)
    traj_b, _ = track(rng)
    predictions = {"scene": {"AV": (traj_a, prob), "42": (traj_b, prob.copy())}}
    path = write_av2_submission(predictions, tmp_path / "joint.parquet")
    assert_round_trip(predictions, path)


def test_float32_softmax_probabilities_accepted_silently(tmp_path):
    rng = np.random.default_rng(3)
    traj, _ = track(rng)
    prob = torch.softmax(torch.randn(6) * 3, dim=0).numpy()  # float32: sum is 1 only up to rounding
    assert prob.dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = write_av2_submission({"s": {"t": (traj, prob)}}, tmp_path / "f32.parquet")
    probabilities, _ = ChallengeSubmission.from_parquet(path).predictions["s"]
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------- bad inputs


def bad(tmp_path, tracks, match, **kwargs):
    path = tmp_path / "bad.parquet"
    with pytest.raises(ValueError, match=match):
        write_av2_submission(tracks, path, **kwargs)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


def test_bad_inputs_raise_clearly(tmp_path):
    rng = np.random.default_rng(4)
    traj, prob = track(rng)
    bad(tmp_path, {}, "no predictions")
    bad(tmp_path, {"s": {}}, "scenario 's' has no tracks")
    bad(tmp_path, {"s": {"t": track(rng, horizon=50)}}, r"shape \[K, 60, 2\]")
    bad(tmp_path, {"s": {"t": (traj[:, :, :1], prob)}}, r"shape \[K, 60, 2\]")
    bad(tmp_path, {"s": {"t": track(rng, k=7)}}, "7 modes, the AV2 leaderboard accepts 1 to 6")
    bad(tmp_path, {"s": {"t": (traj, prob[:5])}}, r"probabilities must have shape \[6\]")
    with_nan = traj.copy()
    with_nan[2, 10, 1] = np.nan
    bad(tmp_path, {"scene-x": {"track-7": (with_nan, prob)}}, r"track 'track-7' of scenario 'scene-x'.*NaN.*\[2\]")
    bad(tmp_path, {"s": {"t": (traj, np.array([np.nan, 1, 0, 0, 0, 0]))}}, "probabilities contain NaN")
    bad(tmp_path, {"s": {"t": (traj, np.array([1.2, -0.2, 0, 0, 0, 0]))}}, "negative probabilities")
    bad(tmp_path, {"s": {"t": (traj, np.zeros(6))}}, "sum to 0")
    bad(tmp_path, {"s": {"t": (traj, prob * 0.9)}}, "sum to 0.9.*renormalize=True")
    bad(tmp_path, {"s": {17: (traj, prob)}}, "track_id must be a non-empty string")
    bad(tmp_path, {"": {"t": (traj, prob)}}, "scenario_id must be a non-empty string")
    other = np.roll(prob, 1)
    bad(tmp_path, {"s": {"a": (traj, prob), "b": (traj, other)}}, "different mode probabilities.*focal track")
    bad(tmp_path, {"s": {"a": (traj, prob), "b": (traj[:3], prob[:3] / prob[:3].sum())}}, "different mode")


def test_renormalize_option_warns_and_rescales(tmp_path):
    rng = np.random.default_rng(5)
    predictions = {f"s{i}": {"t": (traj, prob * 0.5)} for i, (traj, prob) in enumerate(track(rng) for _ in range(3))}
    with pytest.warns(UserWarning, match="renormalised the probabilities of 3 track"):
        path = write_av2_submission(predictions, tmp_path / "r.parquet", renormalize=True)
    assert_round_trip(predictions, path)


def test_tiny_probability_error_is_rescaled(tmp_path):
    rng = np.random.default_rng(6)
    traj, prob = track(rng)
    prob = prob * (1 + 5e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = write_av2_submission({"s": {"t": (traj, prob)}}, tmp_path / "s.parquet")
    probabilities, _ = ChallengeSubmission.from_parquet(path).predictions["s"]
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------- atomic write


def test_failed_write_leaves_no_temp_file_and_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "submission.parquet"
    path.write_bytes(b"previous submission")

    def broken_to_parquet(self, submission_file_path):
        submission_file_path.write_bytes(b"partial")  # a half-written file, then a crash
        raise OSError("disk full")

    monkeypatch.setattr(ChallengeSubmission, "to_parquet", broken_to_parquet)
    with pytest.raises(OSError, match="disk full"):
        write_av2_submission(single_agent_predictions(2), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.parquet"]
    assert path.read_bytes() == b"previous submission"


def test_existing_file_is_replaced(tmp_path):
    path = tmp_path / "submission.parquet"
    write_av2_submission(single_agent_predictions(2, seed=7), path)
    predictions = single_agent_predictions(3, seed=8)
    write_av2_submission(predictions, path)
    assert_round_trip(predictions, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.parquet"]


# ----------------------------------------------------------------------------------------------- builder


def test_builder_accumulates_batches(tmp_path):
    rng = np.random.default_rng(9)
    tracks = [track(rng) for _ in range(5)]
    traj = np.stack([t for t, _ in tracks])
    prob = np.stack([p for _, p in tracks])
    builder = SubmissionBuilder()
    builder.add(["s0", "s1"], ["10", "11"], traj[:2], prob[:2])
    builder.add(["s2", "s3", "s4"], ["12", "13", "14"], torch.from_numpy(traj[2:]), torch.from_numpy(prob[2:]))
    assert len(builder) == 5 and builder.num_scenarios == 5
    path = builder.write(tmp_path / "builder.parquet")
    expected = {f"s{i}": {f"{10 + i}": tracks[i]} for i in range(5)}
    assert_round_trip(expected, path)


def test_builder_refuses_duplicates_and_bad_batches(tmp_path):
    rng = np.random.default_rng(10)
    traj = np.stack([track(rng)[0] for _ in range(3)])
    prob = np.full((3, 6), 1 / 6)
    builder = SubmissionBuilder()
    builder.add(["s0"], ["AV"], traj[:1], prob[:1])
    with pytest.raises(ValueError, match="duplicate prediction for track 'AV' of scenario 's0'"):
        builder.add(["s1", "s0"], ["AV", "AV"], traj[1:], prob[1:])
    with pytest.raises(ValueError, match="duplicate prediction for track '7' of scenario 's2'"):
        builder.add(["s2", "s2"], ["7", "7"], traj[1:], prob[1:])
    assert len(builder) == 1 and builder.num_scenarios == 1  # rejected calls changed nothing
    with pytest.raises(ValueError, match="30 future steps, the AV2 leaderboard needs 60"):
        builder.add(["s5"], ["1"], traj[:1, :, :30], prob[:1])
    with pytest.raises(ValueError, match="2 scenario ids but 1 track ids"):
        builder.add(["s5", "s6"], ["1"], traj[:2], prob[:2])
    with pytest.raises(ValueError, match=r"probabilities must have shape \[N, K\]"):
        builder.add(["s5"], ["1"], traj[:1], prob[:1, :5])
    nan_traj = traj[:1].copy()
    nan_traj[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"track '9' of scenario 's9'.*NaN"):
        builder.add(["s9"], ["9"], nan_traj, prob[:1])
    assert len(builder) == 1
    with pytest.raises(ValueError, match="no predictions"):
        SubmissionBuilder().write(tmp_path / "empty.parquet")
    assert not (tmp_path / "empty.parquet").exists()
