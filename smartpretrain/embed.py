"""Embed the agents of a cache split with a backbone (``embed.sh``): one parquet file of per-agent records.

    python -m smartpretrain.embed data=av1 cache_root=cache split=val model=qcnet ckpt_path=<fine-tuned.ckpt>
    python -m smartpretrain.embed data=av1 cache_root=cache split=train pretrained_ckpt=<ssl.ckpt> \
        pretrained_branch=online model.num_modes=1 +model.propose_stack_only=true   # QCNet as its SSL branch
    python -m smartpretrain.embed ... agents=all reduction=mean limit_scenes=100 output=bank.parquet

Writes ``embeddings.parquet`` in the run folder (or ``output=<path>``) beside the resolved ``config.yaml`` and
``seed.json``; the records and the metadata that travels with them: :mod:`smartpretrain.embeddings.records`.
Weights come through the run layer (:func:`smartpretrain.runs.trainer.build_backbone`, weights-only loading):
``ckpt_path`` (forecasting weights), or ``pretrained_ckpt`` with ``pretrained_branch`` (one branch of an SSL
checkpoint), or neither (the model as initialised under ``seed``: the "no pre-training" reference of a probe).

Refused before any work (:class:`~smartpretrain.runs.embedding.EmbedError`; through ``python -m`` one
``smartpretrain.embed: error: ...`` line and exit status 2): an unknown ``agents`` / ``reduction``, ``batch_size``
or ``limit_scenes`` < 1, ``num_workers`` < 0, both ``ckpt_path`` and ``pretrained_ckpt``, a model without agent
embeddings, and a split that is missing, empty or holds another dataset.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from smartpretrain.runs.cli import hydra_run_dir, one_line_errors, refuse_unshared_launch
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.embedding import EXPECTED_ERRORS, embed


@hydra.main(version_base="1.3", config_path="../configs", config_name="embed")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with one_line_errors("smartpretrain.embed", EXPECTED_ERRORS):
        embed(cfg, hydra_run_dir())


if __name__ == "__main__":
    refuse_unshared_launch("smartpretrain.embed")
    main()
