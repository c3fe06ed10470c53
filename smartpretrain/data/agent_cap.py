"""A per-scene cap on the number of agents, for training on scenes of unbounded size.

Why: the memory of a training step grows much faster than linearly with the agents of a scene. QCNet's
agent-agent attention has one edge per pair of agent-steps within ``a2a_radius`` at every history step (and
one per pair within ``a2m_radius`` in the decoder, tiled over the modes), each carrying a ``[hidden_dim]``
relative embedding, so in a dense scene its activations grow with agents²; Forecast-MAE's dense attention over
actor and lane tokens grows with tokens² as well. WOMD and real AV2 scenes reach several hundred agents, and one
2,000-agent scene in a batch of 4 takes QCNet-small's step past 12 GiB on CPU, 3 GiB with a cap of 128
(``docs/benchmarks.md``, "Scene size and memory").

The rule (:func:`cap_agents`), for a scene with more than ``max_agents`` agents:

1. *Protected* agents are always kept: the focal agent(s) (``AgentRole.FOCAL``), the scored agents
   (``AgentRole.SCORED``; WOMD ``tracks_to_predict``, also any agent with ``difficulty > 0``), the SDC / AV
   (``is_sdc``) and WOMD's objects of interest (``of_interest``). If the protected agents alone exceed
   ``max_agents`` they are all kept anyway and the scene ends up above the cap: a focal or scored agent is never
   dropped, because losses and metrics are computed on them.
2. The remaining slots go to the other agents nearest (xy distance) to the nearest focal agent. An agent's
   reference position is its position at ``scene.current_step``; an agent not observed then uses its last observed
   position before it, else its first observed position after it. Agents never observed sort last. Ties (equal
   distance, or never observed) are broken by the original index; when no focal agent is ever observed, the
   others are taken by index.
3. The kept agents stay in their original order (the selection is a mask, not a re-ordering), and every per-agent
   array of :class:`~smartpretrain.data.scene.AgentTracks` is sliced with the same index; the map, the signals and
   everything else of the scene are unchanged (shared, not copied).

A scene with at most ``max_agents`` agents is returned as is (the same object). :class:`AgentCap` is the
picklable ``Scene -> Scene`` transform to put in front of a backbone adapter (it runs in DataLoader workers).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from smartpretrain.data.scene import AgentTracks, Scene
from smartpretrain.data.taxonomy import AgentRole

__all__ = ["AgentCap", "CapResult", "cap_agents", "count_capped", "protected_mask", "reference_positions"]


@dataclass
class CapResult:
    """What :func:`cap_agents` returns: the (possibly) capped scene and how many agents it dropped."""

    scene: Scene
    num_dropped: int


def _check_max_agents(max_agents: int) -> int:
    if isinstance(max_agents, bool) or int(max_agents) != max_agents or max_agents <= 0:
        raise ValueError(f"max_agents must be a positive integer, got {max_agents!r}")
    return int(max_agents)


def protected_mask(agents: AgentTracks) -> np.ndarray:
    """``[N] bool``: the agents :func:`cap_agents` never drops (focal, scored, SDC / AV, objects of interest)."""
    role = np.asarray(agents.role)
    mask = (role == AgentRole.FOCAL) | (role == AgentRole.SCORED) | np.asarray(agents.is_sdc, bool)
    if agents.of_interest is not None:
        mask |= np.asarray(agents.of_interest, bool)
    if agents.difficulty is not None:
        mask |= np.asarray(agents.difficulty) > 0
    return mask


def reference_positions(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """``([N, 2] float64, [N] bool)``: each agent's xy at ``current_step`` (else its last observed step before,
    else its first after) and whether it has one (False for agents never observed)."""
    valid = np.asarray(scene.agents.valid, bool)
    n, t = valid.shape
    cs = scene.current_step
    steps = np.arange(t)
    before = np.where(valid & (steps <= cs), steps, -1).max(axis=1, initial=-1)  # at or before the present
    after = np.where(valid & (steps > cs), steps, t).min(axis=1, initial=t)
    step = np.where(before >= 0, before, np.where(after < t, after, 0))
    has = (before >= 0) | (after < t)
    xy = scene.agents.position[np.arange(n), step, :2].astype(np.float64)
    return xy, has


def _slice_agents(agents: AgentTracks, index: np.ndarray) -> AgentTracks:
    def take(arr: np.ndarray | None) -> np.ndarray | None:
        return None if arr is None else arr[index]

    return AgentTracks(
        ids=[agents.ids[i] for i in index],
        type=agents.type[index],
        role=agents.role[index],
        is_sdc=agents.is_sdc[index],
        position=agents.position[index],
        heading=agents.heading[index],
        velocity=agents.velocity[index],
        valid=agents.valid[index],
        size=take(agents.size),
        difficulty=take(agents.difficulty),
        of_interest=take(agents.of_interest),
    )


def cap_agents(scene: Scene, max_agents: int) -> CapResult:
    """Keep at most ``max_agents`` agents of ``scene``: the protected ones, then the nearest to the focal agent(s).

    See the module docstring for the rule. Protected agents (focal, scored, SDC / AV, objects of interest) are
    never dropped: when they alone exceed ``max_agents`` they are all kept, and only they, so the result has more
    than ``max_agents`` agents. A scene within the cap is returned unchanged (the same object, ``num_dropped=0``).

    Raises:
        ValueError: ``max_agents`` is not a positive integer.
    """
    max_agents = _check_max_agents(max_agents)
    agents = scene.agents
    n = agents.num_agents
    if n <= max_agents:
        return CapResult(scene, 0)

    keep = protected_mask(agents)
    free = max_agents - int(keep.sum())
    if free > 0:
        xy, has = reference_positions(scene)
        focal = np.flatnonzero(np.asarray(agents.role) == AgentRole.FOCAL)
        focal = focal[has[focal]]
        if len(focal):  # distance to the nearest focal agent
            dist = np.linalg.norm(xy[:, None, :] - xy[None, focal, :], axis=-1).min(axis=1)
        else:  # no focal agent with a position: nearest cannot be told, keep by index
            dist = np.zeros(n)
        dist[~has] = np.inf
        candidates = np.flatnonzero(~keep)
        order = candidates[np.lexsort((candidates, dist[candidates]))]  # by distance, then by index
        keep[order[:free]] = True

    index = np.flatnonzero(keep)  # original order
    capped = replace(scene, agents=_slice_agents(agents, index))
    return CapResult(capped, n - len(index))


def count_capped(num_agents: np.ndarray, max_agents: int) -> tuple[int, int]:
    """``(scenes capped, agents dropped)`` for scenes with ``num_agents`` agents each (e.g. a cache index's counts).

    Counts what the cap removes when the protected agents fit in ``max_agents`` (always true for AV2 / AV1, whose
    protected agents are a handful); it is an upper bound on the dropped agents otherwise.
    """
    max_agents = _check_max_agents(max_agents)
    counts = np.asarray(num_agents, np.int64).reshape(-1)
    over = counts > max_agents
    return int(over.sum()), int((counts[over] - max_agents).sum())


class AgentCap:
    """Picklable ``Scene -> Scene`` transform applying :func:`cap_agents` with ``max_agents``.

    Put it in front of a backbone adapter (``adapter(AgentCap(256)(scene))``); it holds no state but the cap, so
    it pickles into DataLoader workers.
    """

    def __init__(self, max_agents: int) -> None:
        self.max_agents = _check_max_agents(max_agents)

    def __call__(self, scene: Scene) -> Scene:
        return cap_agents(scene, self.max_agents).scene

    def __repr__(self) -> str:
        return f"AgentCap(max_agents={self.max_agents})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentCap) and other.max_agents == self.max_agents

    def __hash__(self) -> int:
        return hash((AgentCap, self.max_agents))
