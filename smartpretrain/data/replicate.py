"""Copy real AV2 scenarios under new scenario ids: volume for benchmarks and conversion tests from one fixture."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_NAMESPACE = uuid.UUID("6f1c3a52-8c1e-4f36-9d2e-5b0f3f7a9c11")


def replicate_av2_scenario(scenario_dir: str | Path, dst_root: str | Path, split: str, copies: int) -> list[str]:
    """Write ``copies`` copies of one AV2 scenario folder into ``{dst_root}/{split}/`` with fresh, stable ids.

    The parquet's ``scenario_id`` column and both file names are rewritten; the content is otherwise identical.
    Returns the new scenario ids.
    """
    scenario_dir = Path(scenario_dir)
    src_id = scenario_dir.name
    table = pq.read_table(scenario_dir / f"scenario_{src_id}.parquet")
    map_json = scenario_dir / f"log_map_archive_{src_id}.json"
    column = table.schema.get_field_index("scenario_id")
    ids = []
    for i in range(copies):
        new_id = str(uuid.uuid5(_NAMESPACE, f"{src_id}/{i}"))
        out = Path(dst_root) / split / new_id
        out.mkdir(parents=True, exist_ok=True)
        renamed = table.set_column(column, "scenario_id", pa.array([new_id] * table.num_rows, pa.string()))
        pq.write_table(renamed, out / f"scenario_{new_id}.parquet")
        shutil.copyfile(map_json, out / f"log_map_archive_{new_id}.json")
        ids.append(new_id)
    return ids
