"""Waymo Open Motion Dataset motion-challenge submission: a ``.tar.gz`` of serialized ``MotionChallengeSubmission``.

Input format (as for the AV2 writer, :mod:`smartpretrain.io.submission`): per scenario and track to predict,
``trajectories [K, 80, 2]`` in the global frame at the scene's 10 Hz future steps (future step 0 is the step after
the current one) and ``probabilities [K]``, 1 <= K <= 6. Track ids are the WOMD track ids as strings (what the
converter stores), or ints.

What Waymo's server reads (schema: ``smartpretrain/data/protos/womd_submission.proto``, field numbers checked
against Waymo's public ``motion_submission.proto``): one ``ChallengeScenarioPredictions`` per scenario whose
``single_predictions`` hold one ``SingleObjectPrediction`` per track to predict (``object_id`` = the int32 track
id), each with up to 6 ``ScoredTrajectory``: 16 points, 8 s at 2 Hz, which are our future steps 4, 9, ..., 79
(0.5 s, 1.0 s, ..., 8.0 s after the current step; the scenario's steps 15, 20, ..., 90), and a ``confidence``
(we write the mode's probability; Waymo does not need the confidences to sum to 1). Points and confidences are
float32 on the wire. Modes are written in the order given.

Checks made before anything is written (one ``ValueError`` naming the scenario and track):

* the scenario id is a non-empty string; the track id is an integer within int32 (WOMD's ``object_id``);
* trajectories have shape ``[K, 80, 2]`` (80 future steps) with 1 <= K <= 6, and probabilities shape ``[K]``;
* trajectories and probabilities are finite (also after the cast to float32) and probabilities are >= 0;
* a (scenario, track) is given once;
* with ``required`` (``{scenario_id: track ids to predict}``, from the scenes): every track to predict of every
  required scenario has a prediction, and no prediction is for another track or scenario.

The file: ``submission.bin-00000-of-0000N`` members, each a full ``MotionChallengeSubmission`` (same metadata,
``submission_type = MOTION_PREDICTION``) holding at most ``scenarios_per_shard`` scenarios in input order, in one
gzip-compressed tar. It is written to a temporary file beside the target and renamed into place
(:func:`smartpretrain.io.atomic.atomic_output`), so a reader never sees a partial archive and a failure leaves none.

Metadata (:class:`WomdSubmissionMetadata`): Waymo's server refuses a submission without an account name, method
name, authors, affiliation, description, method link or parameter count, and requires the three ``uses_*`` flags
to be present (they are always written, false included). Unset text fields are allowed here, so that a file can be
written and inspected before the metadata is known, but are warned about once per write.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import tarfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from smartpretrain.data.protos import womd_message
from smartpretrain.io.atomic import atomic_output

__all__ = [
    "DEFAULT_SCENARIOS_PER_SHARD",
    "WOMD_FUTURE_STEPS",
    "WOMD_MAX_MODES",
    "WOMD_SAMPLED_STEPS",
    "WomdSubmissionBuilder",
    "WomdSubmissionMetadata",
    "check_required",
    "format_parameter_count",
    "object_id_of",
    "read_womd_submission",
    "sample_womd_steps",
    "validate_womd_track",
    "write_womd_submission",
]

#: future steps per input trajectory (8 s at 10 Hz after the current step)
WOMD_FUTURE_STEPS: int = 80
#: the future steps Waymo scores: 0.5 s, 1.0 s, ..., 8.0 s after the current step (16 points at 2 Hz)
WOMD_SAMPLED_STEPS: tuple[int, ...] = tuple(range(4, WOMD_FUTURE_STEPS, 5))
#: most trajectories per track Waymo scores (later ones are discarded by the server: refused here)
WOMD_MAX_MODES: int = 6
#: scenarios per ``MotionChallengeSubmission`` member of the archive (~5 KB each: a few MB per member)
DEFAULT_SCENARIOS_PER_SHARD: int = 1000
#: member names in the archive
SHARD_NAME: str = "submission.bin-{index:05d}-of-{count:05d}"

_INT32 = (-(2**31), 2**31 - 1)
_INT_TEXT = re.compile(r"^[+-]?\d+$")
_PARAMETER_COUNT = re.compile(r"^\d+[KMBT]$")
_FLOAT32_MAX = float(np.finfo(np.float32).max)

#: one checked track: ``(trajectories [K, 16, 2] float32, confidences [K] float32)``
TrackPrediction = tuple[np.ndarray, np.ndarray]
#: ``{scenario_id: {track_id: (trajectories [K, 80, 2], probabilities [K])}}`` (the writer's input)
Predictions = Mapping[str, Mapping[Any, tuple[Any, Any]]]
#: ``{scenario_id: {object_id: (trajectories [K, 16, 2], confidences [K])}}`` (checked, ready to serialize)
_Checked = dict[str, dict[int, TrackPrediction]]


# --------------------------------------------------------------------------------------------------- metadata


def format_parameter_count(count: int) -> str:
    """``count`` as Waymo's ``num_model_parameters`` wants it: an integer and a unit suffix (``"7M"``, ``"0K"``).

    The unit is the largest of K, M, B, T not above ``count`` (K below a thousand), the value rounded.
    """
    if isinstance(count, bool) or int(count) != count or count < 0:
        raise ValueError(f"a parameter count must be a non-negative integer, got {count!r}")
    for scale, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M")):
        if count >= scale:
            return f"{round(count / scale)}{suffix}"
    return f"{round(count / 10**3)}K"


def _text(value: Any, name: str) -> str:
    """A text field: None is unset; a number is taken as its text (Hydra reads ``=2024`` as an int)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"submission metadata {name} must be a string, got {value!r}")
    return value


def _texts(value: Any, name: str) -> tuple[str, ...]:
    """A list-of-text field: None is empty; one plain string is a list of one."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"submission metadata {name} must be a list of non-empty strings, got {value!r}") from None
    if not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"submission metadata {name} must be a list of non-empty strings, got {list(items)!r}")
    return items


@dataclasses.dataclass(frozen=True)
class WomdSubmissionMetadata:
    """The method's description in every ``MotionChallengeSubmission`` of the archive.

    Empty strings / lists mean unset (allowed, warned about: the server refuses them). ``num_model_parameters`` is
    Waymo's string form (``"7M"``); an int is converted with :func:`format_parameter_count`. The ``uses_*`` flags
    answer Waymo's questions: lidar / camera data of the motion dataset used as input, and publicly available
    open-source (LLM / VLM) models used for pre-training (SmartPretrain's own self-supervised pre-training is not
    one), with their names in ``public_model_names``.

    Raises:
        ValueError: a field of the wrong type, or a malformed ``num_model_parameters``.
    """

    account_name: str = ""
    unique_method_name: str = ""
    authors: tuple[str, ...] = ()
    affiliation: str = ""
    description: str = ""
    method_link: str = ""
    uses_lidar_data: bool = False
    uses_camera_data: bool = False
    uses_public_model_pretraining: bool = False
    public_model_names: tuple[str, ...] = ()
    num_model_parameters: str = ""

    #: the fields Waymo's server needs set (the ``uses_*`` flags are always written, so never unset)
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "account_name",
        "unique_method_name",
        "authors",
        "affiliation",
        "description",
        "method_link",
        "num_model_parameters",
    )

    def __post_init__(self) -> None:
        for name in ("account_name", "unique_method_name", "affiliation", "description", "method_link"):
            object.__setattr__(self, name, _text(getattr(self, name), name))
        for name in ("authors", "public_model_names"):
            object.__setattr__(self, name, _texts(getattr(self, name), name))
        for name in ("uses_lidar_data", "uses_camera_data", "uses_public_model_pretraining"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"submission metadata {name} must be true or false, got {value!r}")
            object.__setattr__(self, name, bool(value))
        count = self.num_model_parameters
        if count is None:
            count = ""
        elif isinstance(count, (int, np.integer)) and not isinstance(count, bool):
            count = format_parameter_count(int(count))
        elif not isinstance(count, str) or (count and not _PARAMETER_COUNT.match(count)):
            raise ValueError(
                f"submission metadata num_model_parameters must be an integer and a unit suffix K, M, B or T "
                f"(e.g. '7M', '200K') or an integer count, got {count!r}"
            )
        object.__setattr__(self, "num_model_parameters", count)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> WomdSubmissionMetadata:
        """From a config group / dict (``None`` values mean unset); an unknown key is a ``ValueError``."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown submission metadata {', '.join(unknown)}: the keys are {', '.join(sorted(known))}"
            )
        flags = {"uses_lidar_data", "uses_camera_data", "uses_public_model_pretraining"}
        return cls(**{k: (False if k in flags and v is None else v) for k, v in values.items()})

    def unset(self) -> list[str]:
        """The fields the server needs that are empty."""
        return [name for name in self.REQUIRED if not getattr(self, name)]

    def unset_message(self) -> str:
        """One line saying which fields are unset, or ``""``."""
        missing = self.unset()
        if not missing:
            return ""
        return (
            f"WOMD submission metadata unset: {', '.join(missing)} (Waymo's server refuses a submission without "
            f"them; set submission.<key>=... or pass them to the writer)"
        )

    def fill(self, message: Message) -> None:
        """Set the metadata fields of a ``MotionChallengeSubmission`` (the ``uses_*`` flags always, false too)."""
        for name in ("account_name", "unique_method_name", "affiliation", "description", "method_link"):
            if getattr(self, name):
                setattr(message, name, getattr(self, name))
        if self.num_model_parameters:
            message.num_model_parameters = self.num_model_parameters
        message.authors.extend(self.authors)
        message.public_model_names.extend(self.public_model_names)
        message.uses_lidar_data = self.uses_lidar_data
        message.uses_camera_data = self.uses_camera_data
        message.uses_public_model_pretraining = self.uses_public_model_pretraining

    @classmethod
    def from_message(cls, message: Message) -> WomdSubmissionMetadata:
        """The metadata of a parsed ``MotionChallengeSubmission``."""
        return cls(
            account_name=message.account_name,
            unique_method_name=message.unique_method_name,
            authors=tuple(message.authors),
            affiliation=message.affiliation,
            description=message.description,
            method_link=message.method_link,
            uses_lidar_data=message.uses_lidar_data,
            uses_camera_data=message.uses_camera_data,
            uses_public_model_pretraining=message.uses_public_model_pretraining,
            public_model_names=tuple(message.public_model_names),
            num_model_parameters=message.num_model_parameters,
        )


def _metadata(
    metadata: WomdSubmissionMetadata | Mapping[str, Any] | None, extra: Mapping[str, Any]
) -> WomdSubmissionMetadata:
    """A metadata object from a dataclass, a mapping and / or keyword arguments (keywords win)."""
    if isinstance(metadata, WomdSubmissionMetadata):
        return dataclasses.replace(metadata, **extra) if extra else metadata
    return WomdSubmissionMetadata.from_mapping({**dict(metadata or {}), **extra})


# --------------------------------------------------------------------------------------------------- checks


def _as_numpy(x: Any) -> np.ndarray:
    """numpy view of an array-like (torch tensors on any device included)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _where(scenario_id: Any, track_id: Any) -> str:
    return f"track {track_id!r} of scenario {scenario_id!r}"


def object_id_of(track_id: Any, where: str = "") -> int:
    """WOMD's int32 ``object_id`` of a track id (an int, or the decimal string the converter stores).

    Raises:
        ValueError: not an integer, or outside int32; the message starts with ``where``.
    """
    prefix = f"{where}: " if where else ""
    value: int | None = None
    if isinstance(track_id, (int, np.integer)) and not isinstance(track_id, (bool, np.bool_)):
        value = int(track_id)
    elif isinstance(track_id, str) and _INT_TEXT.match(track_id):
        value = int(track_id)
    if value is None:
        raise ValueError(
            f"{prefix}track id {track_id!r} is not an integer: WOMD's object_id is the scenario's int32 track id"
        )
    if not _INT32[0] <= value <= _INT32[1]:
        raise ValueError(f"{prefix}track id {track_id!r} is outside int32 (WOMD's object_id)")
    return value


def sample_womd_steps(trajectories: Any) -> np.ndarray:
    """The 16 points Waymo scores (future steps 4, 9, ..., 79) of ``[..., 80, 2]`` trajectories."""
    traj = _as_numpy(trajectories)
    if traj.ndim < 2 or traj.shape[-2:] != (WOMD_FUTURE_STEPS, 2):
        raise ValueError(f"trajectories must have shape [..., {WOMD_FUTURE_STEPS}, 2], got {list(traj.shape)}")
    return traj[..., list(WOMD_SAMPLED_STEPS), :]


def validate_womd_track(
    scenario_id: Any, track_id: Any, trajectories: Any, probabilities: Any
) -> tuple[int, np.ndarray, np.ndarray]:
    """Check one track's prediction; returns ``(object_id, trajectories [K, 16, 2] float32, confidences [K] float32)``.

    Raises:
        ValueError: see the module doc (ids, shape, K, non-finite values, negative probabilities).
    """
    if not isinstance(scenario_id, str) or not scenario_id:
        raise ValueError(f"scenario_id must be a non-empty string, got {scenario_id!r} (track {track_id!r})")
    where = _where(scenario_id, track_id)
    object_id = object_id_of(track_id, where)
    traj = _as_numpy(trajectories)
    prob = _as_numpy(probabilities)
    if traj.ndim != 3 or traj.shape[1:] != (WOMD_FUTURE_STEPS, 2):
        raise ValueError(
            f"{where}: trajectories must have shape [K, {WOMD_FUTURE_STEPS}, 2] (the 80 future steps at 10 Hz "
            f"after the current step), got {list(traj.shape)}"
        )
    num_modes = traj.shape[0]
    if not 1 <= num_modes <= WOMD_MAX_MODES:
        raise ValueError(f"{where}: {num_modes} modes, the WOMD challenge accepts 1 to {WOMD_MAX_MODES}")
    if prob.shape != (num_modes,):
        raise ValueError(f"{where}: probabilities must have shape [{num_modes}] (one per mode), got {list(prob.shape)}")
    if not np.issubdtype(traj.dtype, np.number) or not np.issubdtype(prob.dtype, np.number):
        raise ValueError(f"{where}: trajectories and probabilities must be numbers, got {traj.dtype} / {prob.dtype}")
    traj = traj.astype(np.float64)
    prob = prob.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(traj) | (np.abs(traj) > _FLOAT32_MAX)
    if bad.any():
        modes = sorted({int(k) for k in np.argwhere(bad)[:, 0]})
        raise ValueError(f"{where}: trajectories contain NaN, inf or values beyond float32 (modes {modes})")
    if not np.isfinite(prob).all() or (np.abs(prob) > _FLOAT32_MAX).any():
        raise ValueError(f"{where}: probabilities contain NaN or inf: {prob.tolist()}")
    if (prob < 0).any():
        raise ValueError(f"{where}: negative probabilities (Waymo's confidence scores must be >= 0): {prob.tolist()}")
    sampled = np.ascontiguousarray(traj[:, list(WOMD_SAMPLED_STEPS), :], dtype=np.float32)
    return object_id, sampled, prob.astype(np.float32)


def check_required(predictions: Mapping[str, Iterable[Any]], required: Mapping[str, Iterable[Any]]) -> None:
    """Every required track has a prediction, and every prediction is for a required track.

    Args:
        predictions: ``{scenario_id: track ids predicted}`` (ints or decimal strings).
        required: ``{scenario_id: track ids to predict}`` (e.g. each scene's tracks to predict).

    Raises:
        ValueError: naming the first scenario that differs, its missing / extra tracks and how many other scenarios
            differ.
    """
    problems: list[str] = []
    for scenario_id in list(required) + [s for s in predictions if s not in required]:
        if scenario_id not in required:
            extra = sorted(object_id_of(t, f"scenario {scenario_id!r}") for t in predictions[scenario_id])
            problems.append(f"scenario {scenario_id!r} is not a required scenario (predictions for tracks {extra})")
            continue
        want = {object_id_of(t, f"required tracks of scenario {scenario_id!r}") for t in required[scenario_id]}
        have = {object_id_of(t, _where(scenario_id, t)) for t in predictions.get(scenario_id, ())}
        missing, extra_ids = sorted(want - have), sorted(have - want)
        if missing or extra_ids:
            parts = []
            if missing:
                parts.append(f"no prediction for tracks to predict {missing}")
            if extra_ids:
                parts.append(f"predictions for tracks {extra_ids} that are not tracks to predict")
            problems.append(f"scenario {scenario_id!r}: {'; '.join(parts)}")
    if problems:
        more = f" (and {len(problems) - 1} more scenario(s))" if len(problems) > 1 else ""
        raise ValueError(f"WOMD submission does not match the tracks to predict: {problems[0]}{more}")


# --------------------------------------------------------------------------------------------------- writing


def _motion_prediction_type() -> int:
    """The number of ``SubmissionType.MOTION_PREDICTION`` (read from the descriptor)."""
    return womd_message("MotionChallengeSubmission").DESCRIPTOR.enum_values_by_name["MOTION_PREDICTION"].number


def _shard_messages(checked: _Checked, metadata: WomdSubmissionMetadata, scenarios_per_shard: int) -> list[bytes]:
    """The serialized ``MotionChallengeSubmission`` members, ``scenarios_per_shard`` scenarios each."""
    submission_cls = womd_message("MotionChallengeSubmission")
    motion = _motion_prediction_type()
    scenario_ids = list(checked)
    shards = []
    for start in range(0, len(scenario_ids), scenarios_per_shard):
        message = submission_cls()
        message.submission_type = motion
        metadata.fill(message)
        for scenario_id in scenario_ids[start : start + scenarios_per_shard]:
            entry = message.scenario_predictions.add()
            entry.scenario_id = scenario_id
            single = entry.single_predictions  # sets the oneof even for a scenario without tracks
            single.SetInParent()
            for object_id, (traj, conf) in checked[scenario_id].items():
                prediction = single.predictions.add()
                prediction.object_id = object_id
                for k in range(traj.shape[0]):
                    scored = prediction.trajectories.add()
                    scored.confidence = float(conf[k])
                    scored.trajectory.center_x.extend(traj[k, :, 0].tolist())
                    scored.trajectory.center_y.extend(traj[k, :, 1].tolist())
        shards.append(message.SerializeToString())
    return shards


def _check_shard_size(scenarios_per_shard: int) -> int:
    if isinstance(scenarios_per_shard, bool) or int(scenarios_per_shard) != scenarios_per_shard:
        raise ValueError(f"scenarios_per_shard must be a positive integer, got {scenarios_per_shard!r}")
    if scenarios_per_shard < 1:
        raise ValueError(f"scenarios_per_shard must be a positive integer, got {scenarios_per_shard!r}")
    return int(scenarios_per_shard)


def _write_checked(
    checked: _Checked,
    path: str | os.PathLike[str],
    metadata: WomdSubmissionMetadata,
    required: Mapping[str, Iterable[Any]] | None,
    scenarios_per_shard: int,
    warn_unset: bool,
) -> Path:
    """Write checked predictions (see :func:`write_womd_submission`)."""
    scenarios_per_shard = _check_shard_size(scenarios_per_shard)
    if not checked:
        raise ValueError("no predictions to write")
    if required is not None:
        check_required({s: tracks.keys() for s, tracks in checked.items()}, required)
    shards = _shard_messages(checked, metadata, scenarios_per_shard)
    if warn_unset and metadata.unset():
        warnings.warn(metadata.unset_message(), stacklevel=3)
    path = Path(path)
    now = int(time.time())
    with atomic_output(path) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for index, data in enumerate(shards):
            info = tarfile.TarInfo(SHARD_NAME.format(index=index, count=len(shards)))
            info.size, info.mtime, info.mode = len(data), now, 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def write_womd_submission(
    predictions: Predictions,
    path: str | os.PathLike[str],
    metadata: WomdSubmissionMetadata | Mapping[str, Any] | None = None,
    *,
    required: Mapping[str, Iterable[Any]] | None = None,
    scenarios_per_shard: int = DEFAULT_SCENARIOS_PER_SHARD,
    warn_unset: bool = True,
    **metadata_fields: Any,
) -> Path:
    """Validate ``predictions`` and write the WOMD challenge ``.tar.gz`` to ``path`` atomically; returns the path.

    Args:
        predictions: ``{scenario_id: {track_id: (trajectories [K, 80, 2] global frame, probabilities [K])}}``.
        path: the archive (its folder is created if needed; an existing file is replaced).
        metadata: a :class:`WomdSubmissionMetadata` or a mapping of its fields; keyword arguments (``account_name=``,
            ``authors=``, ...) override it.
        required: ``{scenario_id: track ids to predict}``; when given, the predictions must match it exactly.
        scenarios_per_shard: scenarios per ``MotionChallengeSubmission`` member of the archive.
        warn_unset: warn (once) when metadata the server needs is unset.

    Raises:
        ValueError: invalid predictions or metadata (nothing is written then).
    """
    meta = _metadata(metadata, metadata_fields)
    checked: _Checked = {}
    for scenario_id, tracks in predictions.items():
        entry: dict[int, TrackPrediction] = {}
        for track_id, (traj, prob) in tracks.items():
            object_id, sampled, conf = validate_womd_track(scenario_id, track_id, traj, prob)
            if object_id in entry:
                raise ValueError(f"duplicate prediction for {_where(scenario_id, track_id)} (object_id {object_id})")
            entry[object_id] = (sampled, conf)
        checked[scenario_id] = entry
    return _write_checked(checked, path, meta, required, scenarios_per_shard, warn_unset)


# --------------------------------------------------------------------------------------------------- reading


def _members(path: Path) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the regular files of a tar archive (read in memory, never extracted), or of the file
    itself when it is one serialized message."""
    if not tarfile.is_tarfile(path):
        return [(path.name, path.read_bytes())]
    out = []
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    out.append((member.name, handle.read()))
    return out


def read_womd_submission(
    path: str | os.PathLike[str],
) -> tuple[WomdSubmissionMetadata, dict[str, dict[str, TrackPrediction]]]:
    """Read a submission archive (or one serialized ``MotionChallengeSubmission``) back.

    Returns:
        ``(metadata, {scenario_id: {track_id: (trajectories [K, 16, 2] float32, confidences [K] float32)}})``,
        track ids as decimal strings, scenarios, tracks and modes in file order (members in name order).

    Raises:
        ValueError: a member that does not parse, members with different metadata, a member that is not a
            motion-prediction submission, a scenario or track given twice, or a trajectory without 16 points.
    """
    path = Path(path)
    submission_cls = womd_message("MotionChallengeSubmission")
    motion = _motion_prediction_type()
    metadata: WomdSubmissionMetadata | None = None
    predictions: dict[str, dict[str, TrackPrediction]] = {}
    members = sorted(_members(path))
    if not members:
        raise ValueError(f"{path}: no submission file in the archive")
    for name, data in members:
        try:
            message = submission_cls.FromString(data)
        except DecodeError as exc:
            raise ValueError(f"{path}: member {name} is not a serialized MotionChallengeSubmission: {exc}") from exc
        if message.submission_type != motion:
            raise ValueError(f"{path}: member {name} has submission_type {message.submission_type}, not motion")
        member_meta = WomdSubmissionMetadata.from_message(message)
        if metadata is None:
            metadata = member_meta
        elif member_meta != metadata:
            raise ValueError(f"{path}: member {name} has other metadata than the first member")
        for entry in message.scenario_predictions:
            scenario_id = entry.scenario_id
            if entry.WhichOneof("prediction_set") != "single_predictions":
                raise ValueError(f"{path}: scenario {scenario_id!r} in {name} has no single_predictions")
            if scenario_id in predictions:
                raise ValueError(f"{path}: scenario {scenario_id!r} appears twice")
            tracks: dict[str, TrackPrediction] = {}
            for prediction in entry.single_predictions.predictions:
                track_id = str(prediction.object_id)
                if track_id in tracks:
                    raise ValueError(f"{path}: {_where(scenario_id, track_id)} appears twice")
                points = []
                for scored in prediction.trajectories:
                    x, y = scored.trajectory.center_x, scored.trajectory.center_y
                    if len(x) != len(WOMD_SAMPLED_STEPS) or len(y) != len(WOMD_SAMPLED_STEPS):
                        raise ValueError(
                            f"{path}: {_where(scenario_id, track_id)} has a trajectory of {len(x)} x / {len(y)} y "
                            f"points, not {len(WOMD_SAMPLED_STEPS)}"
                        )
                    points.append(np.stack([np.asarray(x, np.float32), np.asarray(y, np.float32)], axis=-1))
                trajectories = np.stack(points) if points else np.zeros((0, len(WOMD_SAMPLED_STEPS), 2), np.float32)
                confidences = np.asarray([s.confidence for s in prediction.trajectories], np.float32)
                tracks[track_id] = (trajectories, confidences)
            predictions[scenario_id] = tracks
    assert metadata is not None
    return metadata, predictions


# --------------------------------------------------------------------------------------------------- builder


class WomdSubmissionBuilder:
    """Accumulates batch outputs, then writes them with the checks of :func:`write_womd_submission`.

    Each :meth:`add` is checked track by track and is all-or-nothing: a bad row or a ``(scenario_id, track_id)``
    already added rejects the whole call and leaves the builder unchanged. Only the 16 sampled points of each mode
    are kept (float32), so a whole test split fits in memory.

    Args:
        metadata: a :class:`WomdSubmissionMetadata` or a mapping of its fields; keyword arguments override it.
        scenarios_per_shard: scenarios per ``MotionChallengeSubmission`` member of the archive.
    """

    def __init__(
        self,
        metadata: WomdSubmissionMetadata | Mapping[str, Any] | None = None,
        *,
        scenarios_per_shard: int = DEFAULT_SCENARIOS_PER_SHARD,
        **metadata_fields: Any,
    ) -> None:
        self.metadata: WomdSubmissionMetadata = _metadata(metadata, metadata_fields)
        self.scenarios_per_shard = _check_shard_size(scenarios_per_shard)
        self._predictions: _Checked = {}
        self._num_tracks = 0

    def add(self, scenario_ids: Sequence[str], track_ids: Sequence[Any], trajectories: Any, probabilities: Any) -> None:
        """Add N tracks: ``trajectories [N, K, 80, 2]`` in the global frame, ``probabilities [N, K]``."""
        traj = _as_numpy(trajectories)
        prob = _as_numpy(probabilities)
        scenario_ids, track_ids = list(scenario_ids), list(track_ids)
        n = len(scenario_ids)
        first = f" (first: {_where(scenario_ids[0], track_ids[0])})" if n and track_ids else ""
        if len(track_ids) != n:
            raise ValueError(f"{n} scenario ids but {len(track_ids)} track ids{first}")
        if traj.ndim != 4 or traj.shape[0] != n:
            raise ValueError(
                f"trajectories must have shape [N={n}, K, {WOMD_FUTURE_STEPS}, 2], got {list(traj.shape)}{first}"
            )
        if prob.ndim != 2 or prob.shape[0] != n:
            raise ValueError(f"probabilities must have shape [N={n}, K], got {list(prob.shape)}{first}")
        rows: list[tuple[str, int, TrackPrediction]] = []
        seen: set[tuple[str, int]] = set()
        for i, (scenario_id, track_id) in enumerate(zip(scenario_ids, track_ids, strict=True)):
            object_id, sampled, conf = validate_womd_track(scenario_id, track_id, traj[i], prob[i])
            key = (scenario_id, object_id)
            if key in seen or object_id in self._predictions.get(scenario_id, {}):
                raise ValueError(f"duplicate prediction for {_where(scenario_id, track_id)} (object_id {object_id})")
            seen.add(key)
            rows.append((scenario_id, object_id, (sampled, conf)))
        for scenario_id, object_id, checked in rows:
            self._predictions.setdefault(scenario_id, {})[object_id] = checked
        self._num_tracks += len(rows)

    def __len__(self) -> int:
        """Number of tracks added."""
        return self._num_tracks

    @property
    def num_scenarios(self) -> int:
        """Number of scenarios with at least one track added."""
        return len(self._predictions)

    @property
    def predictions(self) -> dict[str, dict[str, TrackPrediction]]:
        """What was added: ``{scenario_id: {track_id: (trajectories [K, 16, 2], confidences [K])}}`` (a copy of
        the mappings, not of the arrays)."""
        return {s: {str(o): p for o, p in tracks.items()} for s, tracks in self._predictions.items()}

    def write(
        self,
        path: str | os.PathLike[str],
        required: Mapping[str, Iterable[Any]] | None = None,
        *,
        warn_unset: bool = True,
    ) -> Path:
        """Write everything added so far (see :func:`write_womd_submission`); returns the path."""
        return _write_checked(self._predictions, path, self.metadata, required, self.scenarios_per_shard, warn_unset)
