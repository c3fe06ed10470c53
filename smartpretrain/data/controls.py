"""Kinematic controls derived from trajectories: per agent and step, the longitudinal acceleration and yaw rate
that take the agent from step t to step t + 1, in its own frame.

No dataset records actions; every one records (or its converter derives) positions, headings and velocities on
its own dt. The control of the transition t -> t + 1 is

.. math::
    a_t = \\frac{d u}{d \\tau}, \\qquad \\omega_t = \\frac{d \\theta}{d \\tau}, \\qquad
    u_s = v_s \\cdot (\\cos\\theta_s, \\sin\\theta_s)

the slopes (per second, on the scene's ``dt``) of least-squares lines through the longitudinal speed ``u`` (the
velocity along the heading, negative when reversing) and the heading ``theta`` (unwrapped about
``theta_t``) over the observed steps of a window of ``2 w`` steps centred on the transition, ``t - w + 1 ..
t + w``. ``w = 1`` is the plain finite difference ``(u_{t+1} - u_t) / dt``; a larger ``w`` averages detection
noise out. A line fitted to a linear signal is that signal, so a trajectory with constant acceleration and turn
rate gives exactly those controls for every ``w``, also where the window is cut by a gap or the scene's end.

Defined only where the transition is observed (the agent is valid at t and t + 1); the window's other steps
enter where observed. A control beyond ``max_accel`` / ``max_yaw_rate`` is not a control but a measurement
error (an identity switch, a detection jump): it is marked invalid, not clipped, so no objective learns it.

Why a fitted slope and not a difference of stored values: AV1 records positions only; its converter derives
velocity by one-step differences of detection centroids that jitter by 4 cm (median) at rest, which is
0.35 m/s of speed noise and several m/s^2 of acceleration noise per 0.1 s difference. ``docs/ssl.md`` gives the
spread measured on the real AV1 and AV2 data for each window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smartpretrain.data.scene import AgentTracks

__all__ = ["ControlSpec", "fit_half_width", "kinematic_controls"]


@dataclass(frozen=True)
class ControlSpec:
    """How controls are derived (``ssl.controls`` in the pre-training config).

    Attributes:
        fit_window_s: seconds the least-squares window spans: ``w = max(1, round(fit_window_s / (2 dt)))`` steps
            on either side of the transition (10 Hz and 1 s: w = 5, i.e. 10 steps; ETH/UCY's 0.4 s: w = 1).
        max_accel: |longitudinal acceleration| above this (m/s^2) marks the control invalid.
        max_yaw_rate: |yaw rate| above this (rad/s) marks the control invalid.
    """

    fit_window_s: float = 1.0
    max_accel: float = 10.0
    max_yaw_rate: float = 2.0

    def __post_init__(self) -> None:
        if not (self.fit_window_s >= 0 and self.max_accel > 0 and self.max_yaw_rate > 0):
            raise ValueError(f"ssl.controls: fit_window_s must be >= 0 and the bounds > 0, got {self}")


def fit_half_width(fit_window_s: float, dt: float) -> int:
    """``w``: steps on either side of a transition that the slope fit spans."""
    if dt <= 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    return max(1, round(fit_window_s / (2.0 * dt)))


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def kinematic_controls(
    tracks: AgentTracks, dt: float, spec: ControlSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Controls of every agent and transition of a scene (see the module docstring).

    Returns:
        ``controls [N, T, 2] float32``: (longitudinal acceleration m/s^2, yaw rate rad/s) of the transition
        t -> t + 1 (the last step has none); ``valid [N, T] bool``. Zeros where not valid.
    """
    spec = spec or ControlSpec()
    w = fit_half_width(spec.fit_window_s, dt)
    valid = np.asarray(tracks.valid, bool)
    n, t = valid.shape
    heading = tracks.heading.astype(np.float64)
    velocity = tracks.velocity.astype(np.float64)
    speed = velocity[..., 0] * np.cos(heading) + velocity[..., 1] * np.sin(heading)
    defined = np.zeros((n, t), bool)
    defined[:, :-1] = valid[:, :-1] & valid[:, 1:]
    # sums of the least-squares fits over the window's offsets (x in steps, relative to t)
    s0 = np.zeros((n, t))
    sx, sxx = np.zeros((n, t)), np.zeros((n, t))
    su, sxu = np.zeros((n, t)), np.zeros((n, t))
    sh, sxh = np.zeros((n, t)), np.zeros((n, t))
    for offset in range(-w + 1, w + 1):
        lo, hi = max(0, -offset), min(t, t - offset)  # steps s with s + offset inside the timeline
        if lo >= hi:
            continue
        src = slice(lo + offset, hi + offset)
        m = valid[:, src].astype(np.float64)
        du = speed[:, src]
        dh = _wrap(heading[:, src] - heading[:, lo:hi])  # unwrapped about the heading at t
        x = float(offset)
        s0[:, lo:hi] += m
        sx[:, lo:hi] += m * x
        sxx[:, lo:hi] += m * x * x
        su[:, lo:hi] += m * du
        sxu[:, lo:hi] += m * x * du
        sh[:, lo:hi] += m * dh
        sxh[:, lo:hi] += m * x * dh
    det = s0 * sxx - sx * sx  # > 0 wherever t and t + 1 are observed (two distinct x)
    safe = np.where(defined, det, 1.0)
    accel = np.where(defined, (s0 * sxu - sx * su) / safe, 0.0) / dt
    yaw_rate = np.where(defined, (s0 * sxh - sx * sh) / safe, 0.0) / dt
    plausible = (np.abs(accel) <= spec.max_accel) & (np.abs(yaw_rate) <= spec.max_yaw_rate)
    ok = defined & plausible
    controls = np.stack([np.where(ok, accel, 0.0), np.where(ok, yaw_rate, 0.0)], axis=-1).astype(np.float32)
    return controls, ok
