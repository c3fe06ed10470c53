"""Train compact trajectory embeddings and index them (``train_embed.sh``; the work:
:mod:`smartpretrain.runs.trajectory_embedding`).

    python -m smartpretrain.train_embed data=av1 cache_root=cache encoder.embedding_dim=16 objective.similarity=fft
    python -m smartpretrain.train_embed ... window.length_s=3 window.start_s=2 max_epochs=20 index.kind=hnsw
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from smartpretrain.runs.cli import hydra_run_dir, one_line_errors, refuse_unshared_launch
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.trajectory_embedding import EXPECTED_ERRORS, run


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_embed")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with one_line_errors("smartpretrain.train_embed", EXPECTED_ERRORS):
        run(cfg, hydra_run_dir())


if __name__ == "__main__":
    refuse_unshared_launch("smartpretrain.train_embed")
    main()
