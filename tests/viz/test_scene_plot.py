"""plot_scene / save_scene_png: what is drawn where, gaps, views, PNG output, no pyplot state."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.scene import AgentTracks, Scene
from smartpretrain.data.taxonomy import AgentRole
from smartpretrain.viz import plot_scene, save_scene_png
from smartpretrain.viz.scene_plot import ROLE_COLORS, SDC_COLOR
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT, require_shared
from tests.helpers import TINY_CURRENT_STEP, TINY_FOCAL_GAP, TINY_NUM_STEPS, convert_av2_fixture, make_tiny_scene

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _line(ax: Axes, gid: str):
    found = [line for line in ax.lines if line.get_gid() == gid]
    assert len(found) == 1, f"expected one line with gid {gid!r}, got {len(found)}"
    return found[0]


def _assert_png(path: Path, min_bytes: int = 10_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"


def test_histories_break_at_gaps_and_futures_start_at_present() -> None:
    scene = make_tiny_scene()
    ax = plot_scene(scene)
    hist = _line(ax, "agent/focal/history")
    x = np.asarray(hist.get_xdata(), dtype=float)
    assert len(x) == TINY_CURRENT_STEP + 1
    gap = np.zeros(len(x), bool)
    gap[list(TINY_FOCAL_GAP)] = True
    assert np.isnan(x[gap]).all() and np.isfinite(x[~gap]).all()  # NaN = the line is not drawn across the gap
    fut = _line(ax, "agent/focal/future")
    fx = np.asarray(fut.get_xdata(), dtype=float)
    assert len(fx) == TINY_NUM_STEPS - TINY_CURRENT_STEP
    assert fx[0] == pytest.approx(scene.agents.position[0, TINY_CURRENT_STEP, 0])
    assert hist.get_linestyle() == "-" and fut.get_linestyle() != "-"
    # the pedestrian is unobserved at the present: both parts drawn, no current-position marker
    ped_hist = np.asarray(_line(ax, "agent/ped/history").get_xdata(), dtype=float)
    assert np.isfinite(ped_hist).sum() == 6
    assert not any(line.get_gid() == "agent/ped/current" for line in ax.lines)
    assert not any(p.get_gid() == "agent/ped/box" for p in ax.patches)


def test_role_colours_sizes_and_legend() -> None:
    scene = make_tiny_scene()
    ax = plot_scene(scene)
    assert matplotlib.colors.same_color(_line(ax, "agent/focal/history").get_color(), ROLE_COLORS[AgentRole.FOCAL])
    assert matplotlib.colors.same_color(_line(ax, "agent/AV/history").get_color(), SDC_COLOR)
    boxes = {p.get_gid() for p in ax.patches if p.get_gid()}
    assert boxes == {"agent/focal/box", "agent/AV/box"}  # rectangles where sizes exist, only when observed now
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["focal", "SDC / AV", "fragment", "history", "future"]
    # no sizes: heading arrows instead of boxes
    ax2 = plot_scene(make_tiny_scene(with_size=False), show_future=False)
    assert not [p for p in ax2.patches if p.get_gid()]
    assert _line(ax2, "agent/focal/current") is not None
    assert not any((line.get_gid() or "").endswith("/future") for line in ax2.lines)
    assert "future" not in [t.get_text() for t in ax2.get_legend().get_texts()]


def test_map_layers_drawn() -> None:
    ax = plot_scene(make_tiny_scene(), radius=None)
    fills = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert sum(len(c.get_paths()) for c in fills) == 3  # three lanes filled between their boundaries
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1  # the crosswalk
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    # 6 lane boundaries + 3 lane centerlines + 1 road edge (crosswalk edges are the patch)
    assert sum(len(c.get_segments()) for c in lines) == 10
    dashed = [c for c in lines if any(offset is not None and dash for offset, dash in c.get_linestyles())]
    assert dashed, "DASHED_WHITE boundaries and dotted centerlines must not be drawn solid"


def test_view_centred_on_focal_or_fitting_everything() -> None:
    scene = make_tiny_scene()
    focal_now = scene.agents.position[scene.focal_index, TINY_CURRENT_STEP, :2]
    ax = plot_scene(scene, radius=25.0, title="hello")
    assert np.mean(ax.get_xlim()) == pytest.approx(focal_now[0]) and np.diff(ax.get_xlim())[0] == pytest.approx(50)
    assert np.mean(ax.get_ylim()) == pytest.approx(focal_now[1]) and np.diff(ax.get_ylim())[0] == pytest.approx(50)
    assert ax.get_title() == "hello" and "origin" in ax.get_xlabel()
    ax = plot_scene(scene, radius=None)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    pts = np.concatenate([scene.map.points[:, :2], scene.agents.position[scene.agents.valid][:, :2]])
    assert x0 < pts[:, 0].min() and x1 > pts[:, 0].max() and y0 < pts[:, 1].min() and y1 > pts[:, 1].max()
    with pytest.raises(ValueError, match="radius"):
        plot_scene(scene, radius=0)


def test_draws_into_given_axes() -> None:
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    assert plot_scene(make_tiny_scene(), ax) is ax
    fig.canvas.draw()


def test_save_png_atomic_no_pyplot_state(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    out = save_scene_png(make_tiny_scene(), tmp_path / "sub" / "tiny.png", radius=None)
    assert out == tmp_path / "sub" / "tiny.png"
    _assert_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["tiny.png"]  # no temp file left behind
    assert plt.get_fignums() == before
    save_scene_png(make_tiny_scene(), out, radius=10)  # overwrite in place
    _assert_png(out)


def test_empty_map_and_agents_without_observations(tmp_path: Path) -> None:
    scene = make_tiny_scene(with_map=False, with_size=False)
    out = save_scene_png(scene, tmp_path / "empty_map.png")
    _assert_png(out, min_bytes=5_000)
    a = scene.agents
    # a scene whose non-focal agents are never observed, and an unobserved focal present: still plots
    valid = a.valid.copy()
    valid[1:] = False
    valid[0, TINY_CURRENT_STEP] = False
    bare = Scene(
        scene.scenario_id,
        scene.dataset,
        scene.city,
        scene.num_steps,
        scene.current_step,
        scene.origin,
        AgentTracks(a.ids, a.type, a.role, a.is_sdc, a.position, a.heading, a.velocity, valid),
    )
    ax = plot_scene(bare, radius=10)
    assert np.mean(ax.get_xlim()) == pytest.approx(a.position[0, TINY_CURRENT_STEP - 1, 0])  # last seen position
    assert not any((line.get_gid() or "").startswith("agent/AV") for line in ax.lines)


@pytest.fixture(scope="module")
def av2_scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    require_shared(AV2_FIXTURE_ROOT)
    return SceneCache(convert_av2_fixture(tmp_path_factory.mktemp("cache"))).get(AV2_FIXTURE_ID)


def test_real_av2_scene_png(av2_scene: Scene, tmp_path: Path) -> None:
    out = save_scene_png(av2_scene, tmp_path / "av2.png")
    _assert_png(out, min_bytes=30_000)
    ax = plot_scene(av2_scene, radius=None)
    assert len([p for p in ax.patches if p.get_hatch()]) == 6  # six crosswalks
    drawn = {line.get_gid().split("/")[1] for line in ax.lines if line.get_gid()}
    assert len(drawn) == int(av2_scene.agents.valid.any(axis=1).sum())
