"""Find, download, verify and load checkpoints; load weights into a model with a key-by-key report.

Sources accepted by :func:`resolve_checkpoint` (and therefore :func:`load_checkpoint`):

* a local path (``~`` expanded) or a ``file://`` URL;
* an ``http://`` / ``https://`` URL: streamed (with a progress bar) into a temporary file in the cache
  directory, checked against ``Content-Length`` and the optional sha256 pin (a body that neither vouches for
  must be a structurally complete torch checkpoint), then moved into place with ``os.replace``; a body that breaks
  off, or a transfer that runs past its deadline (``$SMARTPRETRAIN_DOWNLOAD_DEADLINE`` seconds, default 3600),
  caches nothing; the cache file name is derived from the URL, so a second call does not download again, and a
  cached file that does not match a sha256 pin is reported, never deleted;
* ``hf://org/repo/path/to/file[@revision]`` (``hf://datasets/org/repo/...`` for a dataset repository):
  downloaded through :func:`huggingface_hub.hf_hub_download` into ``<cache_dir>/hf``, against
  ``$HF_ENDPOINT`` when set.

The default cache directory is ``$SMARTPRETRAIN_CACHE`` or ``~/.cache/smartpretrain/checkpoints``.

Checkpoints are read with ``torch.load(..., weights_only=True)``: a file that would need arbitrary code to
unpickle is refused with a :class:`CheckpointError` naming the offending global (trusted extra classes can be
allowed via ``safe_globals``). :func:`verified_local_checkpoint` resolves a source and proves it loads that way,
for ``trainer.fit(model, ckpt_path=path, weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import pickle
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

__all__ = [
    "LIGHTNING_SAFE_GLOBALS",
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
    "verified_local_checkpoint",
]

CACHE_ENV = "SMARTPRETRAIN_CACHE"
# Seconds a whole http(s) download may take (beside the per-read timeout); "inf" or "none": no limit.
DEADLINE_ENV = "SMARTPRETRAIN_DOWNLOAD_DEADLINE"
DEFAULT_DOWNLOAD_DEADLINE = 3600.0
# Classes, beyond torch's default weights-only allowlist, that every load of this module accepts. Empty on purpose:
# a checkpoint written by this project's Lightning tasks (Trainer + ModelCheckpoint(save_last=True), AdamW, an LR
# scheduler, save_hyperparameters() of floats / ints / strs / tuples) loads with torch's defaults (checked with
# torch 2.13 / pytorch_lightning 2.6 by tests/io/test_checkpoint_safety.py), so what verified_local_checkpoint
# proves is exactly what trainer.fit(ckpt_path=..., weights_only=True) accepts. Only add plain data classes here
# (e.g. pathlib.PosixPath), and then wrap trainer.fit in torch.serialization.safe_globals(LIGHTNING_SAFE_GLOBALS).
LIGHTNING_SAFE_GLOBALS: tuple[Any, ...] = ()
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


def _pin(sha256: str) -> str:
    return sha256.strip().lower()


def _check_sha256(path: Path, expected: str | None, what: str, kept: str = "") -> None:
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != _pin(expected):
        raise CheckpointError(f"sha256 mismatch for {what}: expected {_pin(expected)}, got {actual}{kept}")


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _download_deadline(deadline: float | None) -> float | None:
    """Seconds allowed for a whole download (None: no limit), from a public ``deadline`` argument.

    ``None`` means the default: ``$SMARTPRETRAIN_DOWNLOAD_DEADLINE`` if set (``inf`` / ``none``: no limit), else 3600.
    """
    if deadline is None:
        raw = os.environ.get(DEADLINE_ENV, "").strip()
        if not raw:
            return DEFAULT_DOWNLOAD_DEADLINE
        if raw.lower() in ("none", "off"):
            return None
        what = f"${DEADLINE_ENV}={raw!r}"
        try:
            value = float(raw)
        except ValueError:
            raise CheckpointError(f"{what} is not a number of seconds (or 'inf' / 'none' for no limit)") from None
    else:
        what, value = f"deadline={deadline!r}", float(deadline)
    if math.isnan(value) or value <= 0:
        raise CheckpointError(f"{what}: a download deadline must be a positive number of seconds (inf: no limit)")
    return None if math.isinf(value) else value


def _set_read_timeout(response: Any, seconds: float) -> None:
    """Bound the next socket read of a urllib response (no public API: best effort through its socket)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(seconds, 0.01))
        except OSError:
            pass


def _structural_problem(path: Path) -> str | None:
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


def _download(
    url: str, dest: Path, *, sha256: str | None, timeout: float, progress: bool, deadline: float | None = None
) -> None:
    """Stream ``url`` into a temporary file beside ``dest``, verify it, then ``os.replace`` it into place.

    Nothing is cached unless the whole body arrived: ``Content-Length`` is checked; a body that breaks off
    (``IncompleteRead``, a connection error) fails; a body whose length nothing vouches for (no ``Content-Length``
    and no sha256 pin: close-delimited or chunked) must be a structurally complete torch checkpoint
    (:func:`_structural_problem`). ``timeout`` bounds the connection and each read, ``deadline`` seconds (None: no
    limit) the whole transfer.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(
        url, headers={"User-Agent": "smartpretrain-checkpoints", "Accept-Encoding": "identity"}
    )
    start = time.monotonic()
    received, expected = 0, None

    def time_left() -> float | None:
        return None if deadline is None else deadline - (time.monotonic() - start)

    def overdue() -> CheckpointError:
        of = f" of {expected}" if expected is not None else ""
        return CheckpointError(
            f"download of {url} ran past its deadline of {deadline:g} s after receiving {received}{of} bytes; "
            f"nothing was cached (raise it with deadline=... or ${DEADLINE_ENV})"
        )

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            left = time_left()
            try:
                response = urllib.request.urlopen(request, timeout=timeout if left is None else min(timeout, left))
            except urllib.error.HTTPError as exc:
                raise CheckpointError(f"HTTP {exc.code} ({exc.reason}) while downloading {url}") from exc
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                left = time_left()
                if left is not None and left <= 0:
                    raise overdue() from exc
                reason = getattr(exc, "reason", exc)
                raise CheckpointError(f"could not download {url}: {reason}") from exc
            with response:
                length_header = response.headers.get("Content-Length")
                expected = int(length_header) if length_header and length_header.strip().isdigit() else None
                digest = hashlib.sha256()
                bar = tqdm(
                    total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=f"download {dest.name.split('-', 1)[-1]}", disable=not progress, leave=False,
                )  # fmt: skip
                with bar:
                    while True:
                        left = time_left()
                        if left is not None:
                            if left <= 0:
                                raise overdue()
                            _set_read_timeout(response, min(timeout, left))
                        try:
                            # read1: returns after one socket read, so the deadline is checked even on a trickle
                            chunk = response.read1(_CHUNK)
                        except (http.client.HTTPException, OSError, ValueError) as exc:  # IncompleteRead, reset, ...
                            left = time_left()
                            if left is not None and left <= 0:
                                raise overdue() from exc
                            raise CheckpointError(
                                f"download of {url} broke off after {received} bytes ({exc!r}); nothing was cached"
                            ) from exc
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
        actual = digest.hexdigest()
        if sha256 is not None and actual != _pin(sha256):
            raise CheckpointError(
                f"sha256 mismatch for {url}: expected {_pin(sha256)}, got {actual} (nothing was cached)"
            )
        if expected is None and sha256 is None:
            problem = _structural_problem(tmp)
            if problem is not None:
                raise CheckpointError(
                    f"download of {url} is truncated or not a torch checkpoint: {problem} ({received} bytes, no "
                    "Content-Length to check them against); nothing was cached"
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
    # A mismatch keeps the file: the pin may be the wrong one, and the blob is shared by every snapshot naming it.
    _check_sha256(path, sha256, uri, kept=f" for {path} (the file was kept)")
    return path


def resolve_checkpoint(
    source: str | Path,
    cache_dir: str | Path | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
    deadline: float | None = None,
) -> Path:
    """Return a local path for ``source`` (local path, ``file://``, ``http(s)://`` or ``hf://``), downloading once.

    Args:
        source: where the checkpoint is.
        cache_dir: download cache (default :func:`default_cache_dir`); unused for local paths.
        sha256: expected hex digest; checked on local files, on fresh downloads (a mismatch caches nothing) and on
            cache hits (a cached file that does not match raises with both digests and is kept: the pin may be
            the wrong one; delete the file to download again).
        timeout: seconds for connecting / each read.
        progress: show a tqdm progress bar while downloading.
        deadline: seconds for a whole http(s) download; None: ``$SMARTPRETRAIN_DOWNLOAD_DEADLINE`` if set, else
            3600; ``math.inf``: no limit. (hf:// transfers are run by huggingface_hub, bounded by ``timeout`` only.)

    Raises:
        CheckpointError: missing file, HTTP error (with URL and status), truncated or broken-off download, deadline
            passed, hash mismatch.
    """
    text = str(source)
    scheme = urllib.parse.urlsplit(text).scheme.lower() if isinstance(source, str) else ""
    if scheme in ("http", "https", "hf"):
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        if scheme == "hf":
            return _resolve_hf(text, cache, sha256=sha256, timeout=timeout, progress=progress)
        dest = cache / url_cache_name(text)
        if dest.is_file():
            _check_sha256(
                dest, sha256, f"the cached download of {text}",
                kept=f" for {dest}; the cached file was kept (if the pin is right, delete it to download again)",
            )  # fmt: skip
            return dest
        limit = _download_deadline(deadline)
        _download(text, dest, sha256=sha256, timeout=timeout, progress=progress, deadline=limit)
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


def _weights_only_load(
    path: Path, source: str | Path, *, map_location: Any, safe_globals: Sequence[Any] | None
) -> Mapping[str, Any]:
    """``torch.load(path, weights_only=True)`` with :data:`LIGHTNING_SAFE_GLOBALS` and ``safe_globals`` allowed.

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


def load_checkpoint(
    source: str | Path,
    map_location: Any = "cpu",
    safe_globals: Sequence[Any] | None = None,
    **resolve_kwargs: Any,
) -> dict[str, Any]:
    """Resolve ``source`` (see :func:`resolve_checkpoint`) and ``torch.load`` it with ``weights_only=True``.

    ``safe_globals`` lists extra classes/functions the restricted unpickler may accept (for trusted files only,
    e.g. a config class stored in ``hyper_parameters``), beside :data:`LIGHTNING_SAFE_GLOBALS`.

    Raises:
        CheckpointError: naming the file, when it is not a torch checkpoint, is corrupt, or needs arbitrary
            objects unpickled (the message then names the offending global, e.g. ``posix.system``).
    """
    path = resolve_checkpoint(source, **resolve_kwargs)
    return dict(_weights_only_load(path, source, map_location=map_location, safe_globals=safe_globals))


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
    :func:`resolve_checkpoint`, load it once on the CPU with the restricted unpickler (plus
    :data:`LIGHTNING_SAFE_GLOBALS`), and return the path to pass on as
    ``trainer.fit(model, ckpt_path=path, weights_only=True)``.

    Raises:
        CheckpointError: as :func:`resolve_checkpoint`, and as :func:`load_checkpoint` when the file is refused
            (naming the offending global) or is not a readable checkpoint dict.
    """
    path = resolve_checkpoint(
        source, cache_dir=cache_dir, sha256=sha256, timeout=timeout, progress=progress, deadline=deadline
    )
    _weights_only_load(path, source, map_location="cpu", safe_globals=None)
    return path


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
