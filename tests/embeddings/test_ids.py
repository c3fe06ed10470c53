"""Who each row is: the batch description's per-row fields (index into the Scene's agents, role, the scene's
current step) for both adapters, and :class:`AgentEmbeddings` identified from it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from smartpretrain.backbones.base import AgentEmbeddings, Backbone, BatchDescription, describe_batch
from smartpretrain.data.scene import Scene
from smartpretrain.data.worker_transfer import pack, unpack
from tests.helpers import TINY_CURRENT_STEP, make_tiny_scene


def _scenes() -> list[Scene]:
    moved = dataclasses.replace(make_tiny_scene("moved"), current_step=TINY_CURRENT_STEP + 3)
    return [make_tiny_scene("a"), moved, make_tiny_scene("c", with_map=False)]


def test_each_row_names_its_scene_agent_role_and_step(backbone: Backbone) -> None:
    scenes = _scenes()
    adapter = backbone.make_adapter()
    d = describe_batch(adapter.collate([adapter(s) for s in scenes]))
    assert d.current_step.tolist() == [9, 12, 9] and d.current_step.dtype == torch.long
    assert d.agent_index.dtype == d.agent_role.dtype == torch.long and d.num_agents > len(scenes)
    for row in range(d.num_agents):
        scene = scenes[int(d.agent_scene[row])]
        i = int(d.agent_index[row])
        assert scene.agents.ids[i] == d.track_ids[row]
        assert int(scene.agents.role[i]) == int(d.agent_role[row])
    ids = d.agent_ids()
    assert ids.scenario_ids == [scenes[int(s)].scenario_id for s in d.agent_scene]
    assert ids.step.tolist() == [[9, 12, 9][int(s)] for s in d.agent_scene]
    for moved in (unpack(*pack(d)), d.to("cpu")):  # worker hand-over and device moves keep the new fields
        assert torch.equal(moved.agent_index, d.agent_index) and torch.equal(moved.current_step, d.current_step)
        assert torch.equal(moved.agent_role, d.agent_role)


def test_embed_agents_identifies_the_rows_of_agent_embeddings(backbone: Backbone) -> None:
    scenes = _scenes()
    adapter = backbone.make_adapter()
    batch = adapter.collate([adapter(s) for s in scenes])
    backbone.eval()
    with torch.no_grad():
        emb = backbone.embed_agents(batch)
        plain = backbone.agent_embeddings(batch, backbone.encode(batch))
    assert plain.ids is None and emb.ids is not None
    torch.testing.assert_close(emb.embeddings, plain.embeddings, rtol=0, atol=0)
    for row in range(len(emb.agent_index)):
        scene = scenes[int(emb.scene_index[row])]
        i = int(emb.agent_index[row])
        assert emb.ids.scenario_ids[row] == scene.scenario_id and emb.ids.track_ids[row] == scene.agents.ids[i]
        assert emb.ids.datasets[row] == "synthetic" and int(emb.ids.role[row]) == int(scene.agents.role[i])
        assert int(emb.ids.step[row]) == scene.current_step


def _description() -> BatchDescription:
    return BatchDescription.from_scenes(
        scenario_ids=["s0", "s1"], datasets=["av1", "av2"], origins=[[0, 0, 0], [1, 2, 3]], current_steps=[19, 49],
        track_ids=[["a", "b"], ["c"]], agent_index=[[4, 7], [0]], agent_roles=[[3, 1], [3]],
    )  # fmt: skip


def test_identified_matches_rows_in_any_order_and_refuses_strangers() -> None:
    d = _description()
    emb = AgentEmbeddings(
        torch.zeros(3, 1, 2), scene_index=torch.tensor([1, 0, 0]), agent_index=torch.tensor([0, 7, 4])
    )
    ids = emb.identified(d).ids
    assert ids.track_ids == ["c", "b", "a"] and ids.scenario_ids == ["s1", "s0", "s0"]
    assert (
        ids.datasets == ["av2", "av1", "av1"] and ids.role.tolist() == [3, 1, 3] and ids.step.tolist() == [49, 19, 19]
    )
    stranger = AgentEmbeddings(torch.zeros(1, 1, 2), scene_index=torch.tensor([1]), agent_index=torch.tensor([4]))
    with pytest.raises(ValueError, match=r"agent 4 of scene 1 \(s1\) is not an agent row of the batch description"):
        stranger.identified(d)
    with pytest.raises(ValueError, match=r"agent 0 of scene 5 \(none such\)"):
        d.rows_of(torch.tensor([5]), torch.tensor([0]))
    assert d.rows_of(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)).tolist() == []


def test_the_description_checks_its_per_row_and_per_scene_fields() -> None:
    d = _description()
    with pytest.raises(ValueError, match=r"agent_role must have shape \[3\]"):
        dataclasses.replace(d, agent_role=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"current_step must have shape \[2\]"):
        dataclasses.replace(d, current_step=torch.zeros(3, dtype=torch.long))
