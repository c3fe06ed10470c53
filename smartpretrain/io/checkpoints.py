"""Find, download, verify and load checkpoints; load weights into a model with a key-by-key report.

Sources accepted by :func:`resolve_checkpoint` (and therefore :func:`load_checkpoint`):

* a local path (``~`` expanded) or a ``file://`` URL;
* an ``http://`` / ``https://`` URL: streamed (with a progress bar) into a temporary file in the cache
  directory, checked against ``Content-Length`` and the optional sha256 pin, then moved into place with
  ``os.replace``; the cache file name is derived from the URL, so a second call does not download again;
* ``hf://org/repo/path/to/file[@revision]`` (``hf://datasets/org/repo/...`` for a dataset repository):
  downloaded through :func:`huggingface_hub.hf_hub_download` into ``<cache_dir>/hf``, against
  ``$HF_ENDPOINT`` when set.

The default cache directory is ``$SMARTPRETRAIN_CACHE`` or ``~/.cache/smartpretrain/checkpoints``.

Checkpoints are read with ``torch.load(..., weights_only=True)``: a file that would need arbitrary code to
unpickle is refused with a :class:`CheckpointError` (trusted extra classes can be allowed via ``safe_globals``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

__all__ = [
    "ArchitectureMismatchError",
    "CheckpointError",
    "HFLocation",
    "LoadReport",
    "default_cache_dir",
    "extract_state_dict",
    "load_checkpoint",
    "load_into",
    "parse_hf_uri",
    "resolve_checkpoint",
    "sha256_file",
    "url_cache_name",
]

CACHE_ENV = "SMARTPRETRAIN_CACHE"
_CHUNK = 1 << 20
# Keys under which checkpoints commonly nest their weights (Lightning, plain training scripts, DeepSpeed).
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, downloaded, verified, read or loaded."""


class ArchitectureMismatchError(CheckpointError):
    """The checkpoint's keys / shapes do not match the model (``load_into(..., strict=True)``)."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------------------------
# Resolution and download
# --------------------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$SMARTPRETRAIN_CACHE`` if set, else ``~/.cache/smartpretrain/checkpoints``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "smartpretrain" / "checkpoints"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def url_cache_name(url: str) -> str:
    """Cache file name for a URL: the first 16 hex digits of the URL's sha256, then its (sanitised) basename."""
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    base = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "checkpoint"
    return f"{key}-{base[:100]}"


@dataclass(frozen=True)
class HFLocation:
    """A parsed ``hf://`` URI."""

    repo_id: str
    filename: str
    revision: str | None = None
    repo_type: str | None = None  # None (model), "dataset" or "space"


_HF_REPO_TYPES = {"datasets": "dataset", "spaces": "space", "models": None}


def parse_hf_uri(uri: str) -> HFLocation:
    """Parse ``hf://[datasets/|spaces/]org/repo/path/to/file[@revision]``.

    The revision is whatever follows the last ``@`` (it may contain ``/``, e.g. ``refs/pr/1``).
    """
    if not uri.startswith("hf://"):
        raise CheckpointError(f"not an hf:// URI: {uri!r}")
    rest = uri[len("hf://") :]
    revision: str | None = None
    if "@" in rest:
        rest, _, revision = rest.rpartition("@")
        if not revision:
            raise CheckpointError(f"empty revision after '@' in {uri!r}")
    parts = [p for p in rest.split("/") if p]
    repo_type = None
    if parts and parts[0] in _HF_REPO_TYPES:
        repo_type = _HF_REPO_TYPES[parts[0]]
        parts = parts[1:]
    if len(parts) < 3:
        raise CheckpointError(f"malformed hf:// URI {uri!r}: expected hf://org/repo/path/to/file[@revision]")
    return HFLocation(repo_id="/".join(parts[:2]), filename="/".join(parts[2:]), revision=revision, repo_type=repo_type)


def _check_sha256(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual.lower() != expected.strip().lower():
        raise CheckpointError(f"sha256 mismatch for {what}: expected {expected.strip().lower()}, got {actual}")


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _download(url: str, dest: Path, *, sha256: str | None, timeout: float, progress: bool) -> None:
    """Stream ``url`` into a temporary file beside ``dest``; verify length and hash; ``os.replace`` into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(
        url, headers={"User-Agent": "smartpretrain-checkpoints", "Accept-Encoding": "identity"}
    )
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise CheckpointError(f"HTTP {exc.code} ({exc.reason}) while downloading {url}") from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise CheckpointError(f"could not download {url}: {reason}") from exc
            with response:
                length_header = response.headers.get("Content-Length")
                expected = int(length_header) if length_header and length_header.strip().isdigit() else None
                digest = hashlib.sha256()
                received = 0
                bar = tqdm(
                    total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=f"download {dest.name.split('-', 1)[-1]}", disable=not progress, leave=False,
                )  # fmt: skip
                with bar:
                    while True:
                        try:
                            chunk = response.read(_CHUNK)
                        except http.client.IncompleteRead as exc:
                            received += len(exc.partial)
                            break
                        except OSError as exc:
                            raise CheckpointError(f"download of {url} failed after {received} bytes: {exc}") from exc
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        if expected is not None and received != expected:
            raise CheckpointError(
                f"truncated download of {url}: received {received} of {expected} bytes (Content-Length)"
            )
        if sha256 is not None and digest.hexdigest() != sha256.strip().lower():
            raise CheckpointError(
                f"sha256 mismatch for {url}: expected {sha256.strip().lower()}, got {digest.hexdigest()}"
                " (nothing was cached)"
            )
        os.replace(tmp, dest)
    finally:
        _unlink_quietly(tmp)


class _SilentTqdm(tqdm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _resolve_hf(uri: str, cache_dir: Path, *, sha256: str | None, timeout: float, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download

    loc = parse_hf_uri(uri)
    endpoint = os.environ.get("HF_ENDPOINT") or None
    kwargs: dict[str, Any] = {
        "repo_id": loc.repo_id,
        "filename": loc.filename,
        "revision": loc.revision,
        "repo_type": loc.repo_type,
        "cache_dir": str(cache_dir / "hf"),
        "etag_timeout": timeout,
        "endpoint": endpoint.rstrip("/") if endpoint else None,
    }
    if not progress:
        kwargs["tqdm_class"] = _SilentTqdm
    try:
        path = Path(hf_hub_download(**kwargs))
    except Exception as exc:  # huggingface_hub raises many types (HTTP, offline, validation)
        raise CheckpointError(f"could not download {uri} from the Hugging Face Hub: {exc}") from exc
    try:
        _check_sha256(path, sha256, uri)
    except CheckpointError:
        # Do not keep an unpinned file around: drop the blob and the snapshot entry.
        blob = path.resolve()
        _unlink_quietly(path)
        _unlink_quietly(blob)
        raise
    return path


def resolve_checkpoint(
    source: str | Path,
    cache_dir: str | Path | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Return a local path for ``source`` (local path, ``file://``, ``http(s)://`` or ``hf://``), downloading once.

    Args:
        source: where the checkpoint is.
        cache_dir: download cache (default :func:`default_cache_dir`); unused for local paths.
        sha256: expected hex digest; checked on local files, on fresh downloads (a mismatch caches nothing)
            and on cache hits (a cached file that does not match is downloaded again).
        timeout: seconds for connecting / each read.
        progress: show a tqdm progress bar while downloading.

    Raises:
        CheckpointError: missing file, HTTP error (with URL and status), truncated download, hash mismatch.
    """
    text = str(source)
    scheme = urllib.parse.urlsplit(text).scheme.lower() if isinstance(source, str) else ""
    if scheme in ("http", "https", "hf"):
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        if scheme == "hf":
            return _resolve_hf(text, cache, sha256=sha256, timeout=timeout, progress=progress)
        dest = cache / url_cache_name(text)
        if dest.is_file():
            try:
                _check_sha256(dest, sha256, str(dest))
                return dest
            except CheckpointError:
                _unlink_quietly(dest)  # stale or corrupted cache entry: fetch again
        _download(text, dest, sha256=sha256, timeout=timeout, progress=progress)
        return dest
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(text).path))
    else:
        path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    _check_sha256(path, sha256, str(path))
    return path


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def _torch_load_detail(exc: BaseException) -> str:
    """The informative part of a torch.load error (torch wraps weights-only failures in a long explanation)."""
    message = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in message:
        rest = message.split(marker, 1)[1].strip()
        detail = rest.split("\n\n", 1)[0].strip()
        # "Unsupported global: GLOBAL mod.name was not an allowed global by default. Please use ..." -> first sentence
        if detail.startswith("Unsupported global"):
            detail = detail.split(" was not", 1)[0]
        return " ".join(detail.split())
    return " ".join(message.split())[:300] or type(exc).__name__


def load_checkpoint(
    source: str | Path,
    map_location: Any = "cpu",
    safe_globals: Sequence[Any] | None = None,
    **resolve_kwargs: Any,
) -> dict[str, Any]:
    """Resolve ``source`` (see :func:`resolve_checkpoint`) and ``torch.load`` it with ``weights_only=True``.

    ``safe_globals`` lists extra classes/functions the restricted unpickler may accept (for trusted files only,
    e.g. a config class stored in ``hyper_parameters``).

    Raises:
        CheckpointError: naming the file, when it is not a torch checkpoint, is corrupt, or needs arbitrary
            objects unpickled.
    """
    path = resolve_checkpoint(source, **resolve_kwargs)
    try:
        if safe_globals:
            with torch.serialization.safe_globals(list(safe_globals)):
                obj = torch.load(path, map_location=map_location, weights_only=True)
        else:
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, ValueError, ...
        detail = _torch_load_detail(exc)
        if "Unsupported global" in detail:
            raise CheckpointError(
                f"refusing to load {path} (from {source}): it needs objects other than tensors and plain "
                f"containers unpickled, which weights_only=True does not do ({detail}). If the file is trusted, "
                "pass the classes it needs via safe_globals=[...]."
            ) from exc
        raise CheckpointError(
            f"{path} (from {source}) is not a readable torch checkpoint: {type(exc).__name__}: {detail}"
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} (from {source}) holds a {type(obj).__name__}, not a checkpoint dict")
    return dict(obj)


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


def _preview(names: Sequence[str], limit: int) -> str:
    shown = ", ".join(names[:limit])
    more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return shown + more


@dataclass
class LoadReport:
    """What :func:`load_into` did: loaded keys, model keys without weights, checkpoint keys without a place,
    and keys present on both sides with different shapes (``(name, checkpoint_shape, model_shape)``)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, tuple, tuple]] = field(default_factory=list)

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
            lines.append(f"  missing in checkpoint ({len(self.missing)}): {_preview(self.missing, limit)}")
        if self.unexpected:
            lines.append(f"  unexpected in checkpoint ({len(self.unexpected)}): {_preview(self.unexpected, limit)}")
        if self.reshaped:
            items = [f"{n} checkpoint {tuple(a)} vs model {tuple(b)}" for n, a, b in self.reshaped]
            lines.append(f"  shape mismatch ({len(self.reshaped)}): {_preview(items, limit)}")
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


# --------------------------------------------------------------------------------------------------------------
# SSL checkpoint -> fine-tuning model
# --------------------------------------------------------------------------------------------------------------

SSL_BRANCHES = ("momentum", "online")
# our pre-training task nests the backbone under `<branch>.backbone.`; the reference release has it at `<branch>.`
_SSL_PREFIXES = {
    "momentum": ("momentum_branch.backbone.", "momentum_branch."),
    "online": ("branch.backbone.", "branch."),
}
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
            lines.append(f"  mode embeddings expanded ({len(self.expanded)}): {_preview(items, limit)}")
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


__all__ += ["SSL_BRANCHES", "TransferReport", "transfer_pretrained"]
