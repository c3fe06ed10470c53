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


def replicate_womd_scenario(
    tfrecord: str | Path, dst_dir: str | Path, copies: int, files: int = 4, prefix: str = "validation"
) -> list[str]:
    """Write ``copies`` copies of the first Scenario of ``tfrecord`` into ``files`` TFRecord files named as WOMD's
    (``{prefix}.tfrecord-0000k-of-0000n`` in ``dst_dir``), each copy with a fresh, stable ``scenario_id``."""
    from smartpretrain.data.protos import womd_message
    from smartpretrain.data.tfrecord import iter_records, write_records

    source = womd_message("Scenario").FromString(next(iter(iter_records(tfrecord))))
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    ids = [f"{source.scenario_id}-{i:06d}" for i in range(copies)]
    for f in range(files):
        records = []
        for scenario_id in ids[f::files]:
            source.scenario_id = scenario_id
            records.append(source.SerializeToString())
        write_records(dst / f"{prefix}.tfrecord-{f:05d}-of-{files:05d}", records)
    return ids
