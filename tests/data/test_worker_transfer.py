"""Batches cross the DataLoader worker boundary as one buffer, unchanged in type and values."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from smartpretrain.data.worker_transfer import PackedBatch, PackingCollate, pack, unpack, worker_collate


@dataclass
class _Batch:
    positions: torch.Tensor
    mask: torch.Tensor
    extra: dict


def _example() -> _Batch:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g, dtype=torch.float64)
    return _Batch(
        positions=base.t(),  # non-contiguous
        mask=torch.rand(7, generator=g) > 0.5,  # bool, odd byte size
        extra={
            "ids": torch.arange(3, dtype=torch.int64),
            "scalar": torch.tensor(2.5),  # 0-dim
            "empty": torch.empty(0, 4, dtype=torch.float32),
            "half": torch.ones(3, dtype=torch.bfloat16),
            "same": [base, base],  # one tensor referenced twice
            "numpy": np.arange(4),
            "name": "scene-1",
        },
    )


def _assert_equal(a: _Batch, b: _Batch) -> None:
    assert type(a) is type(b)
    for x, y in [(a.positions, b.positions), (a.mask, b.mask)] + [
        (a.extra[k], b.extra[k]) for k in ("ids", "scalar", "empty", "half")
    ]:
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    assert all(torch.equal(x, y) for x, y in zip(a.extra["same"], b.extra["same"], strict=True))
    assert np.array_equal(a.extra["numpy"], b.extra["numpy"]) and a.extra["name"] == b.extra["name"]


def test_pack_roundtrip_keeps_types_values_and_uses_one_aligned_buffer() -> None:
    batch = _example()
    structure, buffer, layout = pack(batch)
    assert buffer.dtype == torch.uint8 and buffer.dim() == 1
    assert all(start % 64 == 0 for _, _, start, _ in layout)
    restored = unpack(structure, buffer, layout)
    _assert_equal(batch, restored)
    shared = [t for t in (restored.positions, restored.mask, restored.extra["ids"]) if t.numel()]
    assert all(t.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr() for t in shared)
    assert restored.extra["same"][0] is restored.extra["same"][1]  # pickle memo keeps shared references
    restored.positions += 1  # views do not overlap: writing one leaves the others intact
    assert torch.equal(restored.extra["ids"], torch.arange(3))


def test_packed_batch_unpickles_into_the_batch_itself() -> None:
    batch = _example()
    restored = pickle.loads(pickle.dumps(PackedBatch(batch)))
    assert isinstance(restored, _Batch)
    _assert_equal(batch, restored)


class _Scenes(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": torch.full((index + 1, 2), float(index)), "valid": torch.ones(index + 1, dtype=torch.bool)}


def _collate(samples: list[dict[str, torch.Tensor]]) -> _Batch:
    return _Batch(
        positions=torch.cat([s["x"] for s in samples]),
        mask=torch.cat([s["valid"] for s in samples]),
        extra={"sizes": torch.tensor([len(s["x"]) for s in samples]), "name": "b"},
    )


def test_dataloader_with_workers_delivers_the_same_batches() -> None:
    plain = list(DataLoader(_Scenes(), batch_size=4, collate_fn=_collate))
    packed = list(DataLoader(_Scenes(), batch_size=4, collate_fn=worker_collate(_collate, 2), num_workers=2))
    assert len(plain) == len(packed) == 3
    for a, b in zip(plain, packed, strict=True):
        assert isinstance(b, _Batch) and torch.equal(a.positions, b.positions) and torch.equal(a.mask, b.mask)
        assert torch.equal(a.extra["sizes"], b.extra["sizes"])
    assert worker_collate(_collate, 0) is _collate and isinstance(worker_collate(_collate, 1), PackingCollate)


def test_real_pretraining_batches_packed_or_not_are_equal(tmp_path) -> None:
    """QCNet-small and Forecast-MAE SSL batches (two views, HeteroData / padded tensors) over generated AV1 scenes,
    through one worker with per-tensor transfer (PyTorch's) and with the packed buffer (deterministic views)."""
    from smartpretrain.config import compose_config
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av1 import Av1Converter
    from smartpretrain.data.datamodule import SceneDataset
    from smartpretrain.data.synthetic import generate_av1
    from smartpretrain.data.views import SSLViewTransform, TemporalViewSampler
    from smartpretrain.runs.pretraining import build_pretrain_backbone

    generate_av1(tmp_path / "raw", "val", 6, seed=0)
    convert_split(Av1Converter(tmp_path / "raw", "val"), tmp_path / "cache", ConversionSettings(progress=False))
    for model in ("qcnet_small", "forecast_mae"):
        cfg = compose_config("pretrain", ["data=av1", f"model={model}"])
        adapter = build_pretrain_backbone(cfg).make_adapter()
        transform = SSLViewTransform(TemporalViewSampler(int(cfg.ssl.window), deterministic=True), adapter)
        dataset = SceneDataset(tmp_path / "cache", transform)
        batches = [
            next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate, num_workers=1)))
            for collate in (transform.collate, worker_collate(transform.collate, 1))
        ]  # fmt: skip
        main, worker = batches
        assert type(worker) is type(main)
        (structure_a, buffer_a, layout_a), (structure_b, buffer_b, layout_b) = pack(main), pack(worker)
        assert structure_a == structure_b and layout_a == layout_b and torch.equal(buffer_a, buffer_b), model
