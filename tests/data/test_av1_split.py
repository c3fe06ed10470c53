"""The whole real AV1 val split converts; the manifest accounts for every file; every scene matches its CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.data.taxonomy import AgentRole
from tests.conftest import AV1_VAL, require_shared


@pytest.mark.slow
def test_full_av1_val_split(tmp_path: Path) -> None:
    root = require_shared(AV1_VAL)
    csvs = sorted((root / "val" / "data").glob("*.csv"))
    assert len(csvs) == 579
    out = tmp_path / "av1" / "val"
    manifest = convert_split(Av1Converter(root, "val"), out, ConversionSettings(num_workers=2, progress=False))
    assert manifest["complete"] and manifest["num_raw_items"] == 579
    assert manifest["num_scenes"] + manifest["num_dropped"] == 579
    assert manifest["num_scenes"] == 579, manifest["dropped_by_reason"]
    cache = SceneCache(out)
    assert sorted(cache.ids()) == sorted(p.stem for p in csvs)
    for path in csvs:
        scene = cache.get(path.stem)
        assert int((scene.agents.role == AgentRole.FOCAL).sum()) == 1
        df = pd.read_csv(path)
        assert scene.agents.ids[scene.focal_index] == df.loc[df.OBJECT_TYPE == "AGENT", "TRACK_ID"].iloc[0]
        steps = np.searchsorted(np.unique(df.TIMESTAMP.to_numpy()), df.TIMESTAMP.to_numpy())
        index = {tid: i for i, tid in enumerate(scene.agents.ids)}
        rows = df.TRACK_ID.map(index).to_numpy()
        assert scene.agents.valid[rows, steps].all() and scene.agents.valid.sum() == len(df)
        xy = scene.agents.position[rows, steps, :2].astype(np.float64) + scene.origin[:2]
        np.testing.assert_allclose(xy, df[["X", "Y"]].to_numpy(), atol=1e-3, rtol=0, err_msg=str(path))
