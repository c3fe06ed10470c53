"""Index, search and score embeddings, and probe a backbone by k-NN forecasting (``retrieve.sh``; the work:
:mod:`smartpretrain.runs.retrieval`).

    python -m smartpretrain.retrieve action=build embeddings=bank.parquet index=bank_index index_settings.kind=ivf
    python -m smartpretrain.retrieve action=search index=bank_index query.scenario_id=1234 query.track_id=00000-17
    python -m smartpretrain.retrieve action=evaluate index=<run>/index queries=<run>/queries.parquet plot=true
    python -m smartpretrain.retrieve action=probe data=av1 bank=train.parquet queries=val.parquet
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from smartpretrain.runs.cli import hydra_run_dir, one_line_errors
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.retrieval import EXPECTED_ERRORS, run


@hydra.main(version_base="1.3", config_path="../configs", config_name="retrieve")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with one_line_errors("smartpretrain.retrieve", EXPECTED_ERRORS):
        run(cfg, hydra_run_dir())


if __name__ == "__main__":
    main()
