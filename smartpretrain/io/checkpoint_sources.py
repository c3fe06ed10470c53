"""Where a checkpoint comes from: a source (local path, ``file://``, ``https://``, ``hf://``) -> a verified local file.

:func:`resolve_checkpoint` accepts

* a local path (``~`` expanded) or a ``file://`` URL;
* an ``http://`` / ``https://`` URL: streamed (with a progress bar) into a temporary file in the cache
  directory (:func:`smartpretrain.io.atomic.atomic_output`), checked against ``Content-Length`` and the optional
  sha256 pin (a body that neither vouches for must be a structurally complete torch checkpoint), then renamed into
  place; a body that breaks off, or a transfer that runs past its deadline (``$SMARTPRETRAIN_DOWNLOAD_DEADLINE``
  seconds, default 3600), caches nothing; the cache file name is derived from the URL (:func:`url_cache_name`), so
  a second call does not download again, and a cached file that does not match a sha256 pin is reported, never
  deleted;
* ``hf://org/repo/path/to/file[@revision]`` (``hf://datasets/org/repo/...`` for a dataset repository):
  downloaded through :func:`huggingface_hub.hf_hub_download` into ``<cache_dir>/hf``, against
  ``$HF_ENDPOINT`` when set.

The default cache directory is ``$SMARTPRETRAIN_CACHE`` or ``~/.cache/smartpretrain/checkpoints``. Reading the
file is :mod:`smartpretrain.io.checkpoints`' job.
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from smartpretrain.io.atomic import atomic_output
from smartpretrain.io.safe_load import CheckpointError, structural_problem

__all__ = [
    "CACHE_ENV",
    "DEADLINE_ENV",
    "DEFAULT_DOWNLOAD_DEADLINE",
    "HFLocation",
    "default_cache_dir",
    "parse_hf_uri",
    "resolve_checkpoint",
    "sha256_file",
    "url_cache_name",
]

CACHE_ENV = "SMARTPRETRAIN_CACHE"
# Seconds a whole http(s) download may take (beside the per-read timeout); "inf" or "none": no limit.
DEADLINE_ENV = "SMARTPRETRAIN_DOWNLOAD_DEADLINE"
DEFAULT_DOWNLOAD_DEADLINE = 3600.0
_CHUNK = 1 << 20


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


def _download(
    url: str, dest: Path, *, sha256: str | None, timeout: float, progress: bool, deadline: float | None = None
) -> None:
    """Stream ``url`` into a temporary file beside ``dest``, verify it, then rename it into place (``atomic_output``).

    Nothing is cached unless the whole body arrived: ``Content-Length`` is checked; a body that breaks off
    (``IncompleteRead``, a connection error) fails; a body whose length nothing vouches for (no ``Content-Length``
    and no sha256 pin: close-delimited or chunked) must be a structurally complete torch checkpoint
    (:func:`~smartpretrain.io.safe_load.structural_problem`). ``timeout`` bounds the connection and each read,
    ``deadline`` seconds (None: no limit) the whole transfer.
    """
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

    # the temp file is removed on any failure below, so a partial or unverified body is never cached
    with atomic_output(dest) as tmp:
        with open(tmp, "wb") as out:
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
            problem = structural_problem(tmp)
            if problem is not None:
                raise CheckpointError(
                    f"download of {url} is truncated or not a torch checkpoint: {problem} ({received} bytes, no "
                    "Content-Length to check them against); nothing was cached"
                )


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
