"""Argoverse 2 motion-forecasting leaderboard file (parquet), built with the av2 package's ``ChallengeSubmission``.

Input format: ``{scenario_id: {track_id: (trajectories [K, 60, 2], probabilities [K])}}``, trajectories in the
global (city) frame, 1 <= K <= 6.

Format of the installed av2 (>= 0.3): ``ChallengeSubmission`` keeps **one probability vector per scenario**
(``(probabilities [K], {track_id: trajectories [K, 60, 2]})``, the joint "worlds" of the multi-agent challenge);
every parquet row carries ``scenario_id, track_id, probability, predicted_trajectory_x, predicted_trajectory_y``.
For the single-agent challenge there is one (focal) track per scenario and its probabilities become the
scenario's. Several tracks in one scenario are accepted only when they have the same K and the same
probabilities (within 1e-6), i.e. when the modes really are joint worlds; otherwise :func:`write_av2_submission`
raises rather than write a file that would pair mode k of one track with mode k of another.

Checks made before anything is written (``ValueError`` naming the scenario and track):

* ids are non-empty strings; trajectories have shape ``[K, 60, 2]`` with 1 <= K <= 6 and ``len(probabilities) == K``;
* trajectories and probabilities are finite (no NaN / inf); probabilities are >= 0;
* probabilities sum to 1: within 1e-6 they are rescaled to sum to 1 exactly (float32 softmax rounding); beyond
  that it is an error, unless ``renormalize=True``, which rescales them and emits one warning for the file.

The modes of each scenario are written in order of decreasing probability (stable), which is the order
``ChallengeSubmission.from_parquet`` returns them in. The parquet is written to a temporary file in the target
folder and moved into place with ``os.replace``, so a reader never sees a partial file and a failure leaves none.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from av2.datasets.motion_forecasting.constants import AV2_SCENARIO_PRED_TIMESTEPS
from av2.datasets.motion_forecasting.eval.submission import ChallengeSubmission

from smartpretrain.io.atomic import atomic_output

#: future steps per trajectory the AV2 leaderboard expects (6 s at 10 Hz)
AV2_HORIZON: int = AV2_SCENARIO_PRED_TIMESTEPS
#: most modes per track the AV2 leaderboard scores
AV2_MAX_MODES: int = 6
#: largest |sum(probabilities) - 1| rescaled silently
PROBABILITY_TOLERANCE: float = 1e-6

TrackPrediction = tuple[np.ndarray, np.ndarray]
Predictions = Mapping[str, Mapping[str, TrackPrediction]]


def _as_numpy(x: Any) -> np.ndarray:
    """numpy view of an array-like (torch tensors on any device included)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_id(value: Any, what: str, context: str = "") -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}{context}")
    return str(value)


class _RescaleLog:
    """Counts tracks whose probabilities were rescaled from beyond the tolerance (one warning per file)."""

    def __init__(self) -> None:
        self.count = 0
        self.example = ""

    def warn(self) -> None:
        if self.count:
            warnings.warn(
                f"renormalised the probabilities of {self.count} track(s) whose sum was off 1 by more than "
                f"{PROBABILITY_TOLERANCE:g} (e.g. {self.example})",
                stacklevel=3,
            )


def validate_track(
    scenario_id: str,
    track_id: str,
    trajectories: Any,
    probabilities: Any,
    renormalize: bool = False,
    _log: _RescaleLog | None = None,
) -> TrackPrediction:
    """Check one track's prediction; returns float64 ``(trajectories [K, 60, 2], probabilities [K])`` summing to 1.

    Raises:
        ValueError: bad ids, shape, K, non-finite values, negative probabilities, or probabilities whose sum is
            off 1 by more than 1e-6 (unless ``renormalize``).
    """
    scenario_id = _check_id(scenario_id, "scenario_id")
    track_id = _check_id(track_id, "track_id", f" in scenario {scenario_id}")
    where = f"track {track_id!r} of scenario {scenario_id!r}"
    traj = _as_numpy(trajectories).astype(np.float64)
    prob = _as_numpy(probabilities).astype(np.float64)
    if traj.ndim != 3 or traj.shape[1:] != (AV2_HORIZON, 2):
        raise ValueError(f"{where}: trajectories must have shape [K, {AV2_HORIZON}, 2], got {traj.shape}")
    num_modes = traj.shape[0]
    if not 1 <= num_modes <= AV2_MAX_MODES:
        raise ValueError(f"{where}: {num_modes} modes, the AV2 leaderboard accepts 1 to {AV2_MAX_MODES}")
    if prob.shape != (num_modes,):
        raise ValueError(f"{where}: probabilities must have shape [{num_modes}] (one per mode), got {prob.shape}")
    if not np.isfinite(traj).all():
        bad = sorted({int(k) for k in np.argwhere(~np.isfinite(traj))[:, 0]})
        raise ValueError(f"{where}: trajectories contain NaN or inf (modes {bad})")
    if not np.isfinite(prob).all():
        raise ValueError(f"{where}: probabilities contain NaN or inf: {prob.tolist()}")
    if (prob < 0).any():
        raise ValueError(f"{where}: negative probabilities: {prob.tolist()}")
    total = float(prob.sum())
    if total <= 0:
        raise ValueError(f"{where}: probabilities sum to 0")
    if abs(total - 1.0) > PROBABILITY_TOLERANCE:
        if not renormalize:
            raise ValueError(
                f"{where}: probabilities sum to {total!r}, not 1 (tolerance {PROBABILITY_TOLERANCE:g}); pass "
                f"softmax probabilities, or renormalize=True to rescale them"
            )
        if _log is not None:
            _log.count += 1
            _log.example = _log.example or f"{where}: sum {total:.6g}"
        else:
            warnings.warn(f"{where}: renormalised probabilities summing to {total:.6g}", stacklevel=2)
    return traj, prob / total


def build_challenge_submission(predictions: Predictions, renormalize: bool = False) -> ChallengeSubmission:
    """Validate ``predictions`` and build av2's ``ChallengeSubmission`` (modes in decreasing probability).

    Raises:
        ValueError: see the module doc; also when a scenario has no tracks, there are no scenarios, or the tracks of
            one scenario disagree on K or on the probabilities (av2 stores one probability vector per scenario).
    """
    if not predictions:
        raise ValueError("no predictions to write")
    log = _RescaleLog()
    scenarios: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for scenario_id, tracks in predictions.items():
        scenario_id = _check_id(scenario_id, "scenario_id")
        if not tracks:
            raise ValueError(f"scenario {scenario_id!r} has no tracks")
        checked = {
            track_id: validate_track(scenario_id, track_id, traj, prob, renormalize, log)
            for track_id, (traj, prob) in tracks.items()
        }
        first_id, (_, first_prob) = next(iter(checked.items()))
        for track_id, (_, prob) in checked.items():
            if prob.shape != first_prob.shape or not np.allclose(prob, first_prob, rtol=0, atol=PROBABILITY_TOLERANCE):
                raise ValueError(
                    f"scenario {scenario_id!r}: tracks {first_id!r} and {track_id!r} have different mode "
                    f"probabilities ({first_prob.tolist()} vs {prob.tolist()}); av2's ChallengeSubmission keeps one "
                    f"probability vector per scenario (joint worlds): for the single-agent challenge submit only the "
                    f"focal track of each scenario"
                )
        order = np.argsort(-first_prob, kind="stable")
        scenarios[scenario_id] = (
            first_prob[order],
            {track_id: np.ascontiguousarray(traj[order]) for track_id, (traj, _) in checked.items()},
        )
    log.warn()
    return ChallengeSubmission(predictions=scenarios)


def write_av2_submission(predictions: Predictions, path: str | os.PathLike[str], renormalize: bool = False) -> Path:
    """Validate ``predictions`` and write the AV2 leaderboard parquet to ``path`` atomically; returns the path.

    Args:
        predictions: ``{scenario_id: {track_id: (trajectories [K, 60, 2] global frame, probabilities [K])}}``.
        path: the parquet file (its folder is created if needed; an existing file is replaced).
        renormalize: rescale probabilities whose sum is off 1 by more than 1e-6 (with a warning) instead of raising.

    Raises:
        ValueError: invalid predictions (nothing is written then).
    """
    submission = build_challenge_submission(predictions, renormalize=renormalize)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        submission.to_parquet(tmp)
    return path


def read_av2_submission(path: str | os.PathLike[str]) -> dict[str, dict[str, TrackPrediction]]:
    """Read a submission parquet back (through ``ChallengeSubmission.from_parquet``, which re-validates it) into
    the input format of :func:`write_av2_submission`; modes come in decreasing probability."""
    with warnings.catch_warnings():  # av2 calls sort_values(inplace=True), deprecated in recent pandas
        warnings.filterwarnings("ignore", message="The inplace keyword")
        submission = ChallengeSubmission.from_parquet(Path(path))
    return {
        scenario_id: {track_id: (traj, probabilities) for track_id, traj in tracks.items()}
        for scenario_id, (probabilities, tracks) in submission.predictions.items()
    }


class SubmissionBuilder:
    """Accumulates batch outputs, then writes them with :func:`write_av2_submission`.

    Each :meth:`add` is checked track by track (same checks as the writer) and is all-or-nothing: a bad row or a
    ``(scenario_id, track_id)`` already added rejects the whole call and leaves the builder unchanged.

    Args:
        renormalize: see :func:`write_av2_submission`.
    """

    def __init__(self, renormalize: bool = False) -> None:
        self.renormalize = renormalize
        self._predictions: dict[str, dict[str, TrackPrediction]] = {}
        self._num_tracks = 0

    def add(
        self,
        scenario_ids: Sequence[str],
        track_ids: Sequence[str],
        trajectories: Any,
        probabilities: Any,
    ) -> None:
        """Add N tracks: ``trajectories [N, K, 60, 2]`` in the global frame, ``probabilities [N, K]``."""
        traj = _as_numpy(trajectories)
        prob = _as_numpy(probabilities)
        scenario_ids, track_ids = list(scenario_ids), list(track_ids)
        n = len(scenario_ids)
        if len(track_ids) != n:
            raise ValueError(f"{n} scenario ids but {len(track_ids)} track ids")
        if traj.ndim != 4 or traj.shape[0] != n or traj.shape[-1] != 2:
            raise ValueError(f"trajectories must have shape [N={n}, K, F, 2], got {traj.shape}")
        if traj.shape[2] != AV2_HORIZON:
            raise ValueError(f"trajectories have {traj.shape[2]} future steps, the AV2 leaderboard needs {AV2_HORIZON}")
        if prob.shape != traj.shape[:2]:
            raise ValueError(f"probabilities must have shape [N, K] = {traj.shape[:2]}, got {prob.shape}")
        log = _RescaleLog()
        rows: list[tuple[str, str, TrackPrediction]] = []
        seen: set[tuple[str, str]] = set()
        for i, (scenario_id, track_id) in enumerate(zip(scenario_ids, track_ids, strict=True)):
            checked = validate_track(scenario_id, track_id, traj[i], prob[i], self.renormalize, log)
            key = (scenario_id, track_id)
            if key in seen or track_id in self._predictions.get(scenario_id, {}):
                raise ValueError(f"duplicate prediction for track {track_id!r} of scenario {scenario_id!r}")
            seen.add(key)
            rows.append((scenario_id, track_id, checked))
        log.warn()
        for scenario_id, track_id, checked in rows:
            self._predictions.setdefault(scenario_id, {})[track_id] = checked
        self._num_tracks += len(rows)

    def __len__(self) -> int:
        """Number of tracks added."""
        return self._num_tracks

    @property
    def num_scenarios(self) -> int:
        return len(self._predictions)

    @property
    def predictions(self) -> dict[str, dict[str, TrackPrediction]]:
        """What was added, in the input format of :func:`write_av2_submission` (not a copy)."""
        return self._predictions

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write everything added so far (see :func:`write_av2_submission`); returns the path."""
        return write_av2_submission(self._predictions, path, renormalize=self.renormalize)
