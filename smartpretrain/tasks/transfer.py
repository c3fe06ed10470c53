"""Initialise a fine-tuning backbone from an SSL pre-training checkpoint (ours, or the reference release's layout).

:func:`transfer_pretrained` reads the backbone of one branch of a :class:`~smartpretrain.tasks.pretrain.PretrainTask`
checkpoint, found by the task's own attribute names (:data:`~smartpretrain.tasks.pretrain.BRANCH_ATTRIBUTES`), and
loads it under the backbone's transfer rules (``pretrained_strict_prefixes``, ``mode_embedding_keys``,
``propose_to_refine_prefixes`` of :class:`~smartpretrain.backbones.base.Backbone`), returning a
:class:`TransferReport`. It lives with the pre-training task because it knows that task's module tree; generic
state-dict loading is :mod:`smartpretrain.io.checkpoints`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from smartpretrain.io.checkpoints import ArchitectureMismatchError, CheckpointError, LoadReport, extract_state_dict
from smartpretrain.tasks.pretrain import BRANCH_ATTRIBUTES

__all__ = ["SSL_BRANCHES", "TransferReport", "transfer_pretrained"]

SSL_BRANCHES = tuple(BRANCH_ATTRIBUTES)  # ("momentum", "online")
# our pre-training task nests the backbone under `<branch>.backbone.`; the reference release has it at `<branch>.`
_SSL_PREFIXES = {branch: (f"{attr}.backbone.", f"{attr}.") for branch, attr in BRANCH_ATTRIBUTES.items()}
_SSL_HEAD_PREFIXES = ("projector.", "proj.")


@dataclass
class TransferReport(LoadReport):
    """:class:`LoadReport` of a pre-trained -> fine-tuning transfer, plus where the weights came from.

    Attributes:
        source_prefix: the checkpoint prefix the backbone was read from (e.g. ``momentum_branch.backbone.``).
        strict_prefixes: prefixes whose keys must all load (the encoder).
        expanded: mode tables repeated from the checkpoint's rows to the model's K modes, ``(key, from, to)``.
        copied: ``(source_key, target_key)`` propose -> refine copies ("copy_refine").
        dropped: checkpoint keys of the SSL heads (projector), not part of the backbone.
    """

    source_prefix: str = ""
    strict_prefixes: tuple[str, ...] = ()
    expanded: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    copied: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def strict_loaded(self) -> list[str]:
        return [k for k in self.loaded if k.startswith(self.strict_prefixes)]

    def describe(self, limit: int = 5) -> str:
        lines = [
            f"from {self.source_prefix!r}: " + super().describe(limit),
            f"  {', '.join(self.strict_prefixes)} keys loaded: {len(self.strict_loaded())} (all required)",
        ]
        if self.expanded:
            items = [f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in self.expanded]
            lines.append(f"  mode embeddings expanded ({len(self.expanded)}): {self._preview(items, limit)}")
        if self.copied:
            lines.append(f"  copied propose -> refine: {len(self.copied)} tensors")
        if self.dropped:
            lines.append(f"  SSL head tensors not transferred: {len(self.dropped)}")
        return "\n".join(lines)


def transfer_pretrained(
    model: nn.Module,
    checkpoint: Mapping[str, Any],
    branch: str = "momentum",
    copy_refine: bool = False,
) -> TransferReport:
    """Initialise a fine-tuning backbone from a SmartPretrain SSL checkpoint (ours or the reference release's).

    * The backbone is read from the momentum (EMA) branch (``branch="momentum"``, release default) or the online
      one; projector / predictor / reconstruction heads are dropped.
    * Keys under the model's ``pretrained_strict_prefixes`` (the encoder) load strictly: each must be present
      with the same shape, else :class:`ArchitectureMismatchError` and nothing is loaded.
    * The rest (the decoder) loads non-strictly: fine-tuning-only modules stay at their initialisation.
    * Tables in ``mode_embedding_keys`` with fewer rows than the model (one pre-trained mode) are repeated to
      the model's K modes.
    * ``copy_refine``: tensors under each source prefix of ``propose_to_refine_prefixes`` also initialise the
      matching target-prefix keys (QCNet: propose-stage attention -> refine-stage attention).
    """
    if branch not in SSL_BRANCHES:
        raise ValueError(f"branch must be one of {SSL_BRANCHES}, got {branch!r}")
    state = extract_state_dict(checkpoint)
    prefix = next((p for p in _SSL_PREFIXES[branch] if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        heads = sorted({k.split(".", 1)[0] for k in state})[:8]
        raise CheckpointError(
            f"not a SmartPretrain SSL checkpoint: no key starts with {' or '.join(_SSL_PREFIXES[branch])} "
            f"(top-level modules: {heads}); plain forecasting weights load with ckpt_path=..."
        )
    report = TransferReport(
        source_prefix=prefix, strict_prefixes=tuple(getattr(model, "pretrained_strict_prefixes", ("encoder.",)))
    )
    # the branch itself: ours nests the backbone one level down, with the projector beside it (`<branch>.projector.`)
    branch_root = prefix[: -len("backbone.")] if prefix.endswith(".backbone.") else prefix
    source: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            if key.startswith(branch_root) and key[len(branch_root) :].startswith(_SSL_HEAD_PREFIXES):
                report.dropped.append(key[len(branch_root) :])
            continue
        name = key[len(prefix) :]
        if name.startswith(_SSL_HEAD_PREFIXES):
            report.dropped.append(name)
        else:
            source[name] = value
    target = model.state_dict()

    for key in getattr(model, "mode_embedding_keys", ()):
        if key in source and key in target:
            have, want = source[key], target[key]
            if have.dim() == want.dim() and have.shape[1:] == want.shape[1:] and want.size(0) % have.size(0) == 0:
                if have.size(0) != want.size(0):
                    source[key] = have.repeat(want.size(0) // have.size(0), *([1] * (have.dim() - 1)))
                    report.expanded.append((key, tuple(have.shape), tuple(want.shape)))
    if copy_refine:
        pairs = dict(getattr(model, "propose_to_refine_prefixes", {}))
        if not pairs:
            raise ValueError(f"copy_refine: {type(model).__name__} has no propose -> refine layers to copy")
        for src_prefix, dst_prefix in pairs.items():
            for key in [k for k in source if k.startswith(src_prefix)]:
                dst = dst_prefix + key[len(src_prefix) :]
                if dst in target:
                    source[dst] = source[key]
                    report.copied.append((key, dst))

    for key, value in source.items():
        if key not in target:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(target[key].shape):
            report.reshaped.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            report.loaded.append(key)
    report.missing = [k for k in target if k not in source]
    strict = report.strict_prefixes
    problems = (
        [k for k in report.missing if k.startswith(strict)]
        + [k for k in report.unexpected if k.startswith(strict)]
        + [k for k, _, _ in report.reshaped if k.startswith(strict)]
    )
    if problems or not report.strict_loaded():
        raise ArchitectureMismatchError(
            f"pre-trained {', '.join(strict)} weights do not match {type(model).__name__} "
            f"(every key must load): {report.describe(20)}",
            report,
        )
    loadable = {k: source[k] for k in report.loaded}
    model.load_state_dict(loadable, strict=False)
    return report
