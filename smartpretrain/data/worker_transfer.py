"""Ship a collated batch from a DataLoader worker to the main process as one shared-memory buffer.

A worker hands its batch to the main process by pickling it; PyTorch moves every tensor's storage into its own
shared-memory segment and passes a file descriptor per segment. Our batches hold many small tensors (a QCNet
pre-training batch of 8 scenes: 68 tensors, ~0.9 MB), so that per-tensor cost dominated: a worker delivered 3-5x
fewer scenes/s than the same pipeline in the main process (``scripts/bench_loading.py``, docs/benchmarks.md).

:class:`PackingCollate` wraps an adapter's collate in the worker: the batch is pickled with every plain tensor
replaced by a reference into one contiguous ``uint8`` buffer (64-byte aligned slices), so the main process receives
one buffer (one segment) plus the pickled structure, and rebuilds the batch with the tensors as views of that
buffer. The batch object the training step sees is the same type with equal values; one tensor referenced twice
stays one tensor, but distinct tensors that were views of one storage become independent copies (a batch is read,
not written through, downstream). Only for ``num_workers > 0``: in the main process nothing is pickled and the
wrapper would only cost a copy.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

import torch

_ALIGN = 64  # bytes; keeps every slice aligned for any dtype's view


class _TensorExtractingPickler(pickle.Pickler):
    """Pickles the structure; plain strided tensors become persistent ids (their index in ``tensors``)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors: list[torch.Tensor] = []
        self._index: dict[int, int] = {}  # id(tensor) -> position: a tensor referenced twice is stored once

    def persistent_id(self, obj: Any) -> int | None:
        if type(obj) is torch.Tensor and obj.layout == torch.strided and not obj.requires_grad:
            if id(obj) not in self._index:
                self._index[id(obj)] = len(self.tensors)
                self.tensors.append(obj)
            return self._index[id(obj)]
        return None  # anything else (subclasses, sparse, numpy, Python objects) pickles by value


class _TensorRestoringUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, tensors: list[torch.Tensor]) -> None:
        super().__init__(file)
        self.tensors = tensors

    def persistent_load(self, pid: Any) -> torch.Tensor:
        return self.tensors[int(pid)]


TensorLayout = tuple[torch.dtype, tuple[int, ...], int, int]  # dtype, shape, byte offset, byte size


def pack(batch: Any) -> tuple[bytes, torch.Tensor, list[TensorLayout]]:
    """``(pickled structure, uint8 buffer holding every tensor, layout of each tensor in the buffer)``."""
    file = io.BytesIO()
    pickler = _TensorExtractingPickler(file)
    pickler.dump(batch)
    layout: list[TensorLayout] = []
    offset = 0
    for t in pickler.tensors:
        nbytes = t.numel() * t.element_size()
        layout.append((t.dtype, tuple(t.shape), offset, nbytes))
        offset += -(-nbytes // _ALIGN) * _ALIGN
    buffer = torch.zeros(offset, dtype=torch.uint8)  # zeroed gaps: equal batches pack to equal bytes
    for t, (dtype, shape, start, nbytes) in zip(pickler.tensors, layout, strict=True):
        if nbytes:
            buffer[start : start + nbytes].view(dtype).view(shape).copy_(t)
    return file.getvalue(), buffer, layout


def unpack(structure: bytes, buffer: torch.Tensor, layout: list[TensorLayout]) -> Any:
    """Inverse of :func:`pack`: the batch, its tensors views of ``buffer`` (empty ones fresh)."""
    tensors = [
        buffer[start : start + nbytes].view(dtype).view(shape) if nbytes else torch.empty(shape, dtype=dtype)
        for dtype, shape, start, nbytes in layout
    ]
    return _TensorRestoringUnpickler(io.BytesIO(structure), tensors).load()


class PackedBatch:
    """A batch that pickles as :func:`pack` and unpickles straight into the batch itself (via :func:`unpack`)."""

    __slots__ = ("batch",)

    def __init__(self, batch: Any) -> None:
        self.batch = batch

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[bytes, torch.Tensor, list[TensorLayout]]]:
        return unpack, pack(self.batch)


class PackingCollate:
    """``collate`` whose batches cross the worker -> main process boundary as one buffer (see module docstring)."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list[Any]) -> PackedBatch:
        return PackedBatch(self.collate(samples))


def worker_collate(collate: Callable[[list[Any]], Any], num_workers: int) -> Callable[[list[Any]], Any]:
    """The collate to give a DataLoader: packing when batches come from worker processes, ``collate`` otherwise."""
    return PackingCollate(collate) if num_workers > 0 else collate
