"""Read torch files without running their code: ``torch.load(..., weights_only=True)`` and what its refusals mean.

* :func:`load_weights_only` — load a local file with the restricted unpickler; a file that would need arbitrary
  code is refused in one line naming the file and the offending global (e.g. ``builtins.exec``), and torch's
  advice to reload it with ``weights_only=False`` is never passed on;
* :func:`structural_problem` — whether a file is a complete torch checkpoint (for a download nothing else vouches
  for), without unpickling any code;
* :class:`CheckpointError` — the error of every checkpoint module (sources, loading, transfer); it lives here, at
  the bottom of those modules, so that each can raise it.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["LIGHTNING_SAFE_GLOBALS", "CheckpointError", "load_weights_only", "structural_problem"]

# Classes, beyond torch's default weights-only allowlist, that every load of this module accepts. Empty on purpose:
# a checkpoint written by this project's Lightning tasks (Trainer + ModelCheckpoint(save_last=True), AdamW, an LR
# scheduler, save_hyperparameters() of floats / ints / strs / tuples) loads with torch's defaults (checked with
# torch 2.13 / pytorch_lightning 2.6 by tests/io/test_checkpoint_safety.py), so what verified_local_checkpoint
# proves is exactly what trainer.fit(ckpt_path=..., weights_only=True) accepts. Only add plain data classes here
# (e.g. pathlib.PosixPath), and then wrap trainer.fit in torch.serialization.safe_globals(LIGHTNING_SAFE_GLOBALS).
LIGHTNING_SAFE_GLOBALS: tuple[Any, ...] = ()


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, downloaded, verified, read or loaded."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# torch's advice to reload without the restricted unpickler, and its boilerplate: never passed on.
_UNSAFE_ADVICE = re.compile(
    r"weights_only.{0,60}False|arbitrary code|trusted source|trust the source|Weights only load failed"
    r"|documentation of torch\.load|pytorch\.org/docs|file an issue",
    re.IGNORECASE,
)
# Where torch (2.x) names the global its weights-only unpickler refused; the last one is a loose fallback.
_REFUSED_GLOBAL = (
    re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module"),
    re.compile(r"GLOBAL ([\w.]+)"),
)
_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
# Refusals that are not about a GLOBAL (an allowlisted class used in a way the unpickler does not accept).
_OTHER_REFUSAL = re.compile(r"Can only create new object|Can only build|call reduce for unrecognized function")


def _is_weights_only_error(exc: BaseException) -> bool:
    return isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc)


def _refused_global(exc: BaseException) -> str | None:
    """The full name (``module.qualname``, ``builtins.`` restored) of the global that torch's weights-only unpickler
    refused, when that is why ``torch.load`` failed."""
    if not _is_weights_only_error(exc):
        return None
    message = _ANSI.sub("", str(exc))
    for pattern in _REFUSED_GLOBAL:
        match = pattern.search(message)
        if match:
            name = match.group(1).rstrip(".")
            if not _DOTTED_NAME.fullmatch(name):
                return None  # garbage bytes that happened to start with a GLOBAL opcode
            return name if "." in name else f"builtins.{name}"  # torch prints builtins without their module
    return None


def _is_refusal(exc: BaseException) -> bool:
    return _is_weights_only_error(exc) and _OTHER_REFUSAL.search(str(exc)) is not None


def _torch_load_detail(exc: BaseException) -> str:
    """The informative part of a torch.load error, on one line, without torch's advice to load unsafely."""
    message = _ANSI.sub("", str(exc))
    marker = "WeightsUnpickler error:"
    if marker in message:
        message = message.split(marker, 1)[1]
    paragraphs = re.split(r"\n\s*\n", message)  # torch separates its advice and its docs link by blank lines
    sentences = [s for text in paragraphs for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split()))]
    detail = " ".join(s for s in sentences if s and not _UNSAFE_ADVICE.search(s))
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return detail or type(exc).__name__


def structural_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete torch checkpoint (None when it is one); never runs pickled code.

    A zip archive (torch >= 1.6) must have its central directory, a ``data.pkl`` and members whose CRCs match; any
    other file (legacy pickle format) must load with ``weights_only=True``, or be refused by it for a global (the
    file is then complete enough; the refusal is repeated when it is loaded).
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        return "the body is empty"
    if magic.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            return "a zip archive without its end (central directory)"
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                bad = archive.testzip()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
            return f"an unreadable zip archive ({exc})"
        if bad is not None:
            return f"zip member {bad} is corrupt"
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "a zip archive without data.pkl"
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, EOFError, RuntimeError, ...
        if _refused_global(exc) is not None or _is_refusal(exc):
            return None
        return f"{type(exc).__name__}: {_torch_load_detail(exc)}"
    return None


def load_weights_only(
    path: Path, source: str | Path, *, map_location: Any, safe_globals: Sequence[Any] | None
) -> Mapping[str, Any]:
    """``torch.load(path, weights_only=True)`` with :data:`LIGHTNING_SAFE_GLOBALS` and ``safe_globals`` allowed.

    Args:
        path: the local file.
        source: what the caller was given (a URL, ``hf://`` URI, ...); named in errors when it differs from ``path``.

    Raises:
        CheckpointError: one line naming the file (and ``source`` if it differs): a refusal naming the offending
            global in full, or why the file is not a readable torch checkpoint / not a checkpoint dict.
    """
    where = str(path) if str(source) == str(path) else f"{path} (from {source})"
    allowed = [*LIGHTNING_SAFE_GLOBALS, *(safe_globals or ())]
    try:
        if allowed:
            with torch.serialization.safe_globals(allowed):
                obj = torch.load(path, map_location=map_location, weights_only=True)
        else:
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, ValueError, ...
        # torch's own text advises loading with the unrestricted unpickler: keep it out of the traceback too
        cause = None if _is_weights_only_error(exc) else exc
        name = _refused_global(exc)
        if name is not None:
            raise CheckpointError(
                f"refusing to load {where}: it needs the global {name}, which the weights-only unpickler does not "
                "allow because unpickling arbitrary globals can execute code; if the file is trusted and "
                f"{name} is a harmless class, allow it in Python through safe_globals=[...]"
            ) from cause
        if _is_refusal(exc):
            raise CheckpointError(
                f"refusing to load {where}: the weights-only unpickler refused it ({_torch_load_detail(exc)}); if "
                "the file is trusted, allow the classes it needs in Python through safe_globals=[...]"
            ) from cause
        raise CheckpointError(
            f"{where} is not a readable torch checkpoint: {type(exc).__name__}: {_torch_load_detail(exc)}"
        ) from cause
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj
