"""QCNet (Zhou et al., "Query-Centric Trajectory Prediction", CVPR 2023) as a :class:`Backbone`.

The module tree and parameter names are those of the official release (``encoder.map_encoder``,
``encoder.agent_encoder``, ``decoder``), so official checkpoints load with ``strict=True``
(see :mod:`smartpretrain.backbones.qcnet.checkpoint_spec`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch_geometric.data import HeteroData

from smartpretrain.backbones.base import (
    AgentEmbeddings,
    Backbone,
    BackboneAdapter,
    EvalTargets,
    Forecast,
    rotate,
    select_agents,
)
from smartpretrain.backbones.qcnet.config import QCNetConfig, SSLQuery
from smartpretrain.backbones.qcnet.decoder import QCNetDecoder
from smartpretrain.backbones.qcnet.encoder import QCNetEncoder
from smartpretrain.backbones.qcnet.loss import qcnet_loss
from smartpretrain.backbones.qcnet.map_encoder import batch_vector

_EXTRAS_POS = ("loc_propose_pos", "scale_propose_pos", "loc_refine_pos", "scale_refine_pos")
_EXTRAS_HEAD = ("loc_propose_head", "conc_propose_head", "loc_refine_head", "conc_refine_head")


_PROPOSE_TO_REFINE = {
    f"decoder.{kind}_propose_attn_{suffix}.": f"decoder.{kind}_refine_attn_{suffix}."
    for kind, suffix in (("t2m", "layers"), ("pl2m", "layers"), ("a2m", "layers"), ("m2m", "layer"))
}


class QCNet(Backbone):
    """QCNet with the reference AV2 defaults (7,660,673 parameters).

    Every hyper-parameter lives in one :class:`~smartpretrain.backbones.qcnet.config.QCNetConfig` (``self.config``),
    which the encoders and the decoder read; ``QCNet(config, **overrides)`` and ``QCNet(**fields)`` (how Hydra
    builds it from ``configs/model/qcnet*.yaml``) are both accepted.

    For SmartPretrain, :meth:`agent_embeddings` returns (``ssl_query="propose"``, the release) the single-mode
    query after each propose recurrence, ``[A, num_recurrent_steps, D]``, or (``"encoder"``) the encoder's
    embedding at the current step, ``[A, 1, D]``. ``propose_stack_only=True`` builds only the modules the
    release's SSL branch has (the encoder and the decoder's propose attention stack, 281 decoder keys at the
    AV2 defaults); such a model pre-trains but cannot forecast.

    Input: the HeteroData (or Batch) of :class:`~smartpretrain.backbones.qcnet.adapter.QCNetAdapter`
    (``agent``, ``map_polygon``, ``map_point`` stores and the point->polygon, polygon->polygon edges; maps may
    be empty). Outputs are in each agent's frame at step ``num_historical_steps - 1``.
    """

    #: keys that must all come from a pre-trained checkpoint (the rest may be missing)
    pretrained_strict_prefixes = ("encoder.",)
    #: the release's SSL branch: the encoder plus the decoder's single-mode propose stack
    pretrain_overrides = {"num_modes": 1, "propose_stack_only": True}  # noqa: RUF012 (read-only class default)
    #: per-mode tables: a pre-trained single-mode row is repeated to K modes
    mode_embedding_keys = ("decoder.mode_emb.weight",)
    #: "copy_refine": propose-stage attention weights also initialise the refine stage
    propose_to_refine_prefixes = _PROPOSE_TO_REFINE

    def __init__(self, config: QCNetConfig | None = None, **overrides: Any) -> None:
        """``config`` (default: the AV2 model) with ``overrides`` (field name -> value) replacing its fields."""
        super().__init__()
        self.config = QCNetConfig.from_overrides(config, **overrides)
        # the construction order (map encoder, agent encoder, decoder) decides which random numbers each weight gets
        self.encoder = QCNetEncoder(self.config)
        self.decoder = QCNetDecoder(self.config)

    @property
    def num_modes(self) -> int:
        """K (``config.num_modes``)."""
        return self.config.num_modes

    @property
    def num_historical_steps(self) -> int:
        """H (``config.num_historical_steps``); the current step is H - 1."""
        return self.config.num_historical_steps

    @property
    def num_future_steps(self) -> int:
        """F (``config.num_future_steps``)."""
        return self.config.num_future_steps

    @property
    def propose_stack_only(self) -> bool:
        """Built without the forecasting modules (``config.propose_stack_only``)."""
        return self.config.propose_stack_only

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def make_adapter(self) -> BackboneAdapter:
        from smartpretrain.backbones.qcnet.adapter import QCNetAdapter

        config = self.config
        return QCNetAdapter(
            num_historical_steps=config.num_historical_steps,
            num_future_steps=config.num_future_steps,
            pl2pl_radius=config.pl2pl_radius,
        )

    def encode(self, batch: HeteroData) -> dict[str, Tensor]:
        """``{"x_pl": [P, D], "x_a": [A, H, D]}``."""
        return self.encoder(batch)

    def agent_embeddings(
        self, batch: HeteroData, encoding: dict[str, Tensor], agents: Tensor | None = None
    ) -> AgentEmbeddings:
        """Propose-stage queries ``[A, R, K*D]`` (``ssl_query="propose"``) or the encoder's ``x_a[:, -1:]``; with
        ``agents [A] bool``, the rows of those agents only (the decoder runs for them alone)."""
        x_a = encoding["x_a"]
        scene = batch_vector(batch, "agent", x_a.size(0), x_a.device)
        agent_index = batch["agent"]["agent_index"]
        if self.config.ssl_query == SSLQuery.PROPOSE:
            emb = self.decoder.propose_queries(batch, encoding, agents)
        else:
            emb = x_a[:, -1:]
        if agents is None:
            return AgentEmbeddings(emb, scene, agent_index)
        return AgentEmbeddings(emb[agents], scene[agents], agent_index[agents])

    def query_embeddings(self, batch: HeteroData, scene: Tensor, agent: Tensor) -> AgentEmbeddings:
        """The embeddings of the agents ``(scene, agent)`` only: the decoder runs for them alone, and the agent
        encoder computes only what their queries read (``QCNetAgentEncoder.forward`` with ``agents``)."""
        store = batch["agent"]
        row_scene = batch_vector(batch, "agent", store["agent_index"].numel(), store["agent_index"].device)
        agents = select_agents(row_scene, store["agent_index"], scene, agent)
        return self.agent_embeddings(batch, self.encoder(batch, agents), agents)

    def forecast(self, batch: HeteroData, encoding: dict[str, Tensor]) -> Forecast:
        out = self.decoder(batch, encoding)
        keys = _EXTRAS_POS + (_EXTRAS_HEAD if self.config.output_head else ())
        return Forecast(loc=out["loc_refine_pos"], pi=out["pi"], extras={key: out[key] for key in keys})

    def loss(self, batch: HeteroData, forecast: Forecast) -> dict[str, Tensor]:
        """``loss`` = ``reg_loss_propose`` + ``reg_loss_refine`` + ``cls_loss`` (see :mod:`.loss`)."""
        agent = batch["agent"]
        h = self.num_historical_steps
        # predicted and observed: a scene without future (test split) predicts steps it has no target for
        predict = agent["predict_mask"][:, h:] & agent["valid_mask"][:, h:]
        return qcnet_loss(
            forecast.extras,
            forecast.pi,
            agent["target"],
            reg_mask=predict,
            cls_mask=predict[:, -1],
            output_head=self.config.output_head,
        )

    def eval_targets(self, batch: HeteroData) -> EvalTargets:
        agent = batch["agent"]
        scene = batch_vector(batch, "agent", agent.num_nodes, agent["position"].device)
        dataset = batch.dataset if isinstance(batch.dataset, list) else [batch.dataset]
        h = self.num_historical_steps
        return EvalTargets(
            target=agent["target"][..., :2],
            # predicted and observed: a test split predicts steps it has no ground truth for
            valid=agent["predict_mask"][:, h:] & agent["valid_mask"][:, h:],
            role=agent["category"],
            scene_index=scene,
            dataset=list(dataset),
            heading=agent["target"][..., 3],
            speed=agent["velocity"][:, h - 1, :2].norm(dim=-1),
        )

    def to_scene_frame(self, batch: HeteroData, loc: Tensor) -> Tensor:
        """Rotate by the heading at step H-1 and add the position at H-1 (scene frame; add ``origin`` for city)."""
        agent = batch["agent"]
        h = self.num_historical_steps - 1
        return rotate(loc, agent["heading"][:, h, None, None]) + agent["position"][:, h, None, None, :2]


__all__ = ["QCNet"]
