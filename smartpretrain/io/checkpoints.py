"""Load checkpoints safely and copy their weights into a model with a key-by-key report.

* :func:`load_checkpoint` — resolve a source (:mod:`smartpretrain.io.checkpoint_sources`: local path, ``https://``,
  ``hf://``, cache, sha256 pin) and read it with ``torch.load(..., weights_only=True)``
  (:mod:`smartpretrain.io.safe_load`): a file that would need arbitrary code to unpickle is refused with a
  :class:`CheckpointError` naming the offending global (trusted extra classes can be allowed via ``safe_globals``);
* :func:`verified_local_checkpoint` — resolve a source and prove it loads that way, for
  ``trainer.fit(model, ckpt_path=path, weights_only=True)``;
* :func:`extract_state_dict` — the tensors of a plain, Lightning or otherwise nested checkpoint, keyed for the
  target module;
* :func:`load_into` — copy them into a module, returning a :class:`LoadReport` (or raising
  :class:`ArchitectureMismatchError` when ``strict`` and the keys / shapes do not match).

Initialising a fine-tuning backbone from a pre-training checkpoint is :mod:`smartpretrain.tasks.transfer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from smartpretrain.io.checkpoint_sources import resolve_checkpoint
from smartpretrain.io.safe_load import CheckpointError, load_weights_only

__all__ = [
    "ArchitectureMismatchError",
    "CheckpointError",  # defined in io/safe_load.py (below the sources); raised by every function here
    "LoadReport",
    "extract_state_dict",
    "load_checkpoint",
    "load_into",
    "verified_local_checkpoint",
]

# Keys under which checkpoints commonly nest their weights (Lightning, plain training scripts, DeepSpeed).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


class ArchitectureMismatchError(CheckpointError):
    """The checkpoint's keys / shapes do not match the model (``load_into(..., strict=True)``)."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def load_checkpoint(
    source: str | Path,
    map_location: Any = "cpu",
    safe_globals: Sequence[Any] | None = None,
    **resolve_kwargs: Any,
) -> dict[str, Any]:
    """Resolve ``source`` (see :func:`~smartpretrain.io.checkpoint_sources.resolve_checkpoint`, which takes
    ``resolve_kwargs``) and ``torch.load`` it with ``weights_only=True``.

    ``safe_globals`` lists extra classes/functions the restricted unpickler may accept (for trusted files only,
    e.g. a config class stored in ``hyper_parameters``), beside
    :data:`~smartpretrain.io.safe_load.LIGHTNING_SAFE_GLOBALS`.

    Raises:
        CheckpointError: naming the file, when it is not a torch checkpoint, is corrupt, or needs arbitrary
            objects unpickled (the message then names the offending global, e.g. ``posix.system``).
    """
    path = resolve_checkpoint(source, **resolve_kwargs)
    return dict(load_weights_only(path, source, map_location=map_location, safe_globals=safe_globals))


def verified_local_checkpoint(
    source: str | Path,
    *,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    timeout: float = 60.0,
    deadline: float | None = None,
    progress: bool = True,
) -> Path:
    """A local path for ``source`` that is proven to load with ``torch.load(..., weights_only=True)``.

    For resuming Lightning from a checkpoint of unknown origin: resolve (and download) ``source`` exactly like
    :func:`~smartpretrain.io.checkpoint_sources.resolve_checkpoint`, load it once on the CPU with the restricted
    unpickler (plus :data:`~smartpretrain.io.safe_load.LIGHTNING_SAFE_GLOBALS`), and return the path to pass on as
    ``trainer.fit(model, ckpt_path=path, weights_only=True)``.

    Raises:
        CheckpointError: as ``resolve_checkpoint``, and as :func:`load_checkpoint` when the file is refused
            (naming the offending global) or is not a readable checkpoint dict.
    """
    path = resolve_checkpoint(
        source, cache_dir=cache_dir, sha256=sha256, timeout=timeout, progress=progress, deadline=deadline
    )
    load_weights_only(path, source, map_location="cpu", safe_globals=None)
    return path


# --------------------------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------------------------


def _is_state_dict(obj: Any) -> bool:
    if not isinstance(obj, Mapping) or not obj:
        return False
    tensors = 0
    for key, value in obj.items():
        if not isinstance(key, str):
            return False
        if isinstance(value, Tensor):
            tensors += 1
        elif not key.endswith("_extra_state"):
            return False
    return tensors > 0


def _common_first_component(keys: Iterable[str]) -> str | None:
    heads = {k.split(".", 1)[0] + "." if "." in k else None for k in keys}
    if len(heads) == 1:
        (head,) = heads
        return head
    return None


def extract_state_dict(
    ckpt: Mapping[str, Any], prefix: str | None = None, auto_strip: bool = False
) -> dict[str, Tensor]:
    """The tensors of a checkpoint, keyed as the target module expects them.

    Accepts a plain state_dict, a Lightning checkpoint (``{"state_dict": ..., "hyper_parameters": ...}``) and
    nestings under ``"model"`` / ``"model_state_dict"`` / ``"module"``.

    Args:
        prefix: a submodule prefix such as ``"backbone."`` (the trailing dot is optional). When some keys carry
            it, only those are kept, with the prefix removed; when none does, the keys are returned unchanged
            (a state_dict already saved from that submodule).
        auto_strip: afterwards, strip a first key component shared by *all* keys (e.g. Lightning's ``model.``
            or DataParallel's ``module.``).

    Raises:
        CheckpointError: no state_dict found.
    """
    obj: Any = ckpt
    seen = 0
    while not _is_state_dict(obj):
        if not isinstance(obj, Mapping) or seen > 4:
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not _is_state_dict(obj):
        keys = list(obj.keys())[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            "no state_dict found in checkpoint (expected tensors, or one of "
            f"{', '.join(repr(k) for k in _WRAPPER_KEYS)} holding them); top-level keys: {keys}"
        )
    state: dict[str, Tensor] = dict(obj)
    if prefix:
        pre = prefix if prefix.endswith(".") else prefix + "."
        selected = {k[len(pre) :]: v for k, v in state.items() if k.startswith(pre)}
        if selected:
            state = selected
    if auto_strip:
        head = _common_first_component(state)
        if head is not None:
            state = {k[len(head) :]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------------------------------------------
# Loading into a model
# --------------------------------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What :func:`load_into` did: loaded keys, model keys without weights, checkpoint keys without a place,
    and keys present on both sides with different shapes (``(name, checkpoint_shape, model_shape)``)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @staticmethod
    def _preview(names: Sequence[str], limit: int) -> str:
        """The first ``limit`` names, then how many more (for :meth:`describe`, here and in subclasses)."""
        shown = ", ".join(names[:limit])
        more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
        return shown + more

    @property
    def ok(self) -> bool:
        """True when every model tensor was loaded and every checkpoint tensor was used."""
        return not (self.missing or self.unexpected or self.reshaped)

    def describe(self, limit: int = 5) -> str:
        """Counts, then the first ``limit`` names of each non-empty category."""
        lines = [
            f"{len(self.loaded)} loaded, {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.reshaped)} shape-mismatched"
        ]
        if self.missing:
            lines.append(f"  missing in checkpoint ({len(self.missing)}): {self._preview(self.missing, limit)}")
        if self.unexpected:
            lines.append(
                f"  unexpected in checkpoint ({len(self.unexpected)}): {self._preview(self.unexpected, limit)}"
            )
        if self.reshaped:
            items = [f"{n} checkpoint {tuple(a)} vs model {tuple(b)}" for n, a, b in self.reshaped]
            lines.append(f"  shape mismatch ({len(self.reshaped)}): {self._preview(items, limit)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def _apply_prefix_map(state: Mapping[str, Any], prefix_map: Mapping[str, str]) -> dict[str, Any]:
    ordered = sorted(prefix_map.items(), key=lambda kv: len(kv[0]), reverse=True)  # longest prefix wins
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key
        for old, repl in ordered:
            if key.startswith(old):
                new = repl + key[len(old) :]
                break
        if new in out:
            raise CheckpointError(f"prefix_map maps two checkpoint keys onto {new!r}")
        out[new] = value
    return out


def _prefix_hint(report: LoadReport) -> str:
    """Suggest a prefix when many unexpected keys are missing keys under one extra first component."""
    if not report.unexpected or not report.missing:
        return ""
    missing = set(report.missing)
    matches: dict[str, int] = {}
    for key in report.unexpected:
        if "." in key:
            head, rest = key.split(".", 1)
            if rest in missing:
                matches[head + "."] = matches.get(head + ".", 0) + 1
    if not matches:
        return ""
    head, count = max(matches.items(), key=lambda kv: kv[1])
    if count * 2 < len(missing):
        return ""
    return (
        f"\nhint: {count} checkpoint keys match missing model keys once the prefix {head!r} is removed; use "
        f"extract_state_dict(ckpt, prefix={head!r}) or load_into(..., prefix_map={{{head!r}: ''}})"
    )


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    strict: bool = True,
    prefix_map: Mapping[str, str] | None = None,
) -> LoadReport:
    """Copy matching tensors of ``state_dict`` into ``model`` and report what happened.

    Tensors whose shape differs from the model's are never loaded (they are listed in ``reshaped``).

    Args:
        state_dict: a state_dict (a whole checkpoint is passed through :func:`extract_state_dict` first).
        strict: raise :class:`ArchitectureMismatchError` (and load nothing) unless every key matches.
        prefix_map: rename checkpoint key prefixes before matching, e.g. ``{"model.": ""}`` or
            ``{"encoder.": "backbone.encoder."}``.
    """
    state: Mapping[str, Any] = state_dict if _is_state_dict(state_dict) else extract_state_dict(state_dict)
    if prefix_map:
        state = _apply_prefix_map(state, prefix_map)
    target = model.state_dict()
    report = LoadReport()
    usable: dict[str, Any] = {}
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
            continue
        want = target[key]
        if isinstance(value, Tensor) and isinstance(want, Tensor) and tuple(value.shape) != tuple(want.shape):
            report.reshaped.append((key, tuple(value.shape), tuple(want.shape)))
            continue
        usable[key] = value
        report.loaded.append(key)
    report.missing = [k for k in target if k not in state]
    if strict and not report.ok:
        limit = 20
        parts = [f"checkpoint does not match {type(model).__name__} (wrong architecture?): {report.describe(limit)}"]
        parts.append(_prefix_hint(report))
        parts.append("\nPass strict=False to load only the matching tensors.")
        raise ArchitectureMismatchError("".join(parts), report)
    try:
        model.load_state_dict(usable, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"loading weights into {type(model).__name__} failed: {exc}") from exc
    return report
