"""Checkpoint safety: weights-only refusal of pickled code, verified resume files, and downloads that must never
cache a partial body (deadline, close-delimited / chunked bodies that break off, pinned cache hits).

Every server is started by the tests on 127.0.0.1; nothing reaches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from smartpretrain.io.checkpoint_sources import resolve_checkpoint, url_cache_name
from smartpretrain.io.checkpoints import CheckpointError, load_checkpoint, verified_local_checkpoint
from smartpretrain.io.safe_load import LIGHTNING_SAFE_GLOBALS
from tests.io.conftest import cached_files, serving

# ----------------------------------------------------------------------------------------------------------------
# Payloads
# ----------------------------------------------------------------------------------------------------------------


def plant_marker(path: str) -> None:
    """What a malicious pickle would run; weights-only loading must never call it."""
    Path(path).touch()


class Evil:
    """Unpickles by calling ``how(*args)``, each of which would create ``marker``."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "function":
            return (plant_marker, (str(self.marker),))
        if self.how == "os.system":
            return (os.system, (f"touch '{self.marker}'",))
        return (exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",))


# the global each payload names: a module-level function, a blocked module's function, a builtin
EVIL_GLOBALS = {
    "function": f"{__name__}.plant_marker",
    "os.system": f"{os.system.__module__}.system",
    "exec": "builtins.exec",
}


def to_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def weights() -> bytes:
    torch.manual_seed(0)
    return to_bytes({"state_dict": {"w": torch.randn(64, 64), "b": torch.randn(64)}, "epoch": 1})


def assert_clean_refusal(message: str, global_name: str, *paths: object) -> None:
    assert global_name in message, message
    assert "weights_only=False" not in message and not re.search(r"weights_only.{0,60}False", message), message
    assert "\n" not in message, message  # one line
    for path in paths:
        assert str(path) in message, message


# ----------------------------------------------------------------------------------------------------------------
# Local server: each route writes its raw response
# ----------------------------------------------------------------------------------------------------------------

Responder = Callable[[http.server.BaseHTTPRequestHandler], None]


class RawServer:
    def __init__(self) -> None:
        self.routes: dict[str, Responder] = {}
        self.requests: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(self.path)
                respond = server.routes.get(self.path)
                self.close_connection = True
                try:
                    if respond is None:
                        self.wfile.write(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    else:
                        respond(self)
                    self.wfile.flush()
                except OSError:  # the client gave up
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def add(self, path: str, respond: Responder) -> str:
        self.routes[path] = respond
        return self.base + path

    def count(self, path: str) -> int:
        with self._lock:
            return self.requests.count(path)


@pytest.fixture
def server() -> Iterator[RawServer]:
    srv = RawServer()
    with serving(srv.httpd, srv.thread, before_shutdown=srv.stop.set):
        yield srv


def with_length(body: bytes) -> Responder:
    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    return respond


def close_delimited(body: bytes) -> Responder:
    """HTTP/1.0, no Content-Length: the body ends where the server closes the connection."""

    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + body)

    return respond


def chunked(body: bytes, pieces: int = 4, terminate: bool = True) -> Responder:
    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        step = -(-len(body) // pieces)
        for i in range(0, len(body), step):
            part = body[i : i + step]
            h.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
        if terminate:
            h.wfile.write(b"0\r\n\r\n")

    return respond


def trickle(stop: threading.Event, total: int = 40) -> Responder:
    """Announces ``total`` bytes, then sends one every 0.1 s (never idle long enough for a read timeout)."""

    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % total)
        h.wfile.flush()
        for _ in range(total):
            if stop.wait(0.1):
                return
            h.wfile.write(b"x")
            h.wfile.flush()

    return respond


# ----------------------------------------------------------------------------------------------------------------
# Malicious checkpoints are refused, naming the global, and never run
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(EVIL_GLOBALS))
def test_malicious_download_is_refused(server: RawServer, cache: Path, tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    body = to_bytes({"state_dict": {"w": torch.zeros(1)}, "evil": Evil(marker, how)})
    url = server.add("/evil.ckpt", with_length(body))
    with pytest.raises(CheckpointError, match="refusing to load") as info:
        verified_local_checkpoint(url, cache_dir=cache, progress=False)
    assert_clean_refusal(str(info.value), EVIL_GLOBALS[how], cache / url_cache_name(url), url)
    with pytest.raises(CheckpointError, match="refusing to load") as info:
        load_checkpoint(url, cache_dir=cache, progress=False)
    assert_clean_refusal(str(info.value), EVIL_GLOBALS[how], url)
    # the same bytes served close-delimited pass the download's structural check (complete), then are refused
    other = server.add("/evil-nolength.ckpt", close_delimited(body))
    with pytest.raises(CheckpointError, match="refusing to load") as info:
        verified_local_checkpoint(other, cache_dir=cache, progress=False)
    assert_clean_refusal(str(info.value), EVIL_GLOBALS[how], other)
    assert not marker.exists()


@pytest.mark.parametrize("how", sorted(EVIL_GLOBALS))
def test_malicious_local_file_is_refused(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": Evil(marker, how)}, path)
    for source in (path, str(path), path.as_uri()):
        with pytest.raises(CheckpointError, match="refusing to load") as info:
            verified_local_checkpoint(source)
        assert_clean_refusal(str(info.value), EVIL_GLOBALS[how], path)
        with pytest.raises(CheckpointError, match="refusing to load") as info:
            load_checkpoint(source)
        assert_clean_refusal(str(info.value), EVIL_GLOBALS[how], path)
    # the message names the source only when it differs from the file
    assert f"(from {path.as_uri()})" in str(info.value)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "(from" not in str(info.value)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# A genuine Lightning checkpoint passes and resumes with weights_only=True
# ----------------------------------------------------------------------------------------------------------------


def _lightning_module():
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self, lr: float = 0.05, ks: tuple[int, ...] = (1, 6), name: str = "tiny") -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(4, 2)
            self.start_step: int | None = None

        def on_train_start(self) -> None:
            self.start_step = self.trainer.global_step

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return pl, Module


def _trainer(pl, root: Path, max_steps: int):
    from pytorch_lightning.callbacks import ModelCheckpoint

    return pl.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root / "checkpoints", save_last=True)], default_root_dir=root,
    )  # fmt: skip


def test_genuine_lightning_checkpoint_verifies_and_resumes(server: RawServer, cache: Path, tmp_path: Path) -> None:
    pl, module_cls = _lightning_module()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=8)
    torch.manual_seed(0)
    _trainer(pl, tmp_path / "first", 2).fit(module_cls(), data)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert LIGHTNING_SAFE_GLOBALS == ()  # torch's default allowlist reads this project's Lightning checkpoints
    assert verified_local_checkpoint(last) == last
    assert load_checkpoint(last)["hyper_parameters"] == {"lr": 0.05, "ks": (1, 6), "name": "tiny"}
    # served close-delimited: the download's structural check accepts a genuine checkpoint
    url = server.add("/last.ckpt", close_delimited(last.read_bytes()))
    path = verified_local_checkpoint(url, cache_dir=cache, progress=False)
    assert path.read_bytes() == last.read_bytes()
    resumed = module_cls()
    trainer = _trainer(pl, tmp_path / "second", 4)
    trainer.fit(resumed, data, ckpt_path=path, weights_only=True)
    assert resumed.start_step == 2 and trainer.global_step == 4


# ----------------------------------------------------------------------------------------------------------------
# Downloads never cache a partial body
# ----------------------------------------------------------------------------------------------------------------


def test_trickle_is_aborted_at_the_deadline(server: RawServer, cache: Path) -> None:
    url = server.add("/slow.ckpt", trickle(server.stop))
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="deadline") as info:
        resolve_checkpoint(url, cache_dir=cache, progress=False, timeout=5, deadline=1.0)
    assert time.monotonic() - started < 2.5
    message = str(info.value)
    assert url in message and "deadline of 1 s" in message
    received = int(re.search(r"after receiving (\d+) of 40 bytes", message).group(1))
    assert 0 < received < 20
    assert cached_files(cache) == []


def test_deadline_from_environment(server: RawServer, cache: Path, monkeypatch) -> None:
    url = server.add("/slow.ckpt", trickle(server.stop))
    monkeypatch.setenv("SMARTPRETRAIN_DOWNLOAD_DEADLINE", "0.5")
    with pytest.raises(CheckpointError, match=r"deadline of 0\.5 s"):
        verified_local_checkpoint(url, cache_dir=cache, progress=False, timeout=5)
    assert cached_files(cache) == []
    monkeypatch.setenv("SMARTPRETRAIN_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(CheckpointError, match="SMARTPRETRAIN_DOWNLOAD_DEADLINE"):
        resolve_checkpoint(url, cache_dir=cache, progress=False)


def test_close_delimited_body_cut_short_is_not_cached(server: RawServer, cache: Path) -> None:
    body = weights()
    url = server.add("/model.ckpt", close_delimited(body[: len(body) // 2]))
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint") as info:
        resolve_checkpoint(url, cache_dir=cache, progress=False, timeout=5)
    assert url in str(info.value)
    assert cached_files(cache) == []
    # the cache was not poisoned: the fixed server's complete body is downloaded and loads
    server.add("/model.ckpt", close_delimited(body))
    path = verified_local_checkpoint(url, cache_dir=cache, progress=False)
    assert path.read_bytes() == body and server.count("/model.ckpt") == 2
    expected = torch.load(io.BytesIO(body), weights_only=True)["state_dict"]["b"]
    assert torch.equal(load_checkpoint(url, cache_dir=cache, progress=False)["state_dict"]["b"], expected)
    assert server.count("/model.ckpt") == 2


def test_chunked_body_without_its_last_chunk_is_not_cached(server: RawServer, cache: Path) -> None:
    body = weights()
    url = server.add("/model.ckpt", chunked(body, terminate=False))
    with pytest.raises(CheckpointError, match="broke off") as info:
        resolve_checkpoint(url, cache_dir=cache, progress=False, timeout=5)
    assert url in str(info.value) and "IncompleteRead" in str(info.value)
    assert cached_files(cache) == []
    server.add("/model.ckpt", chunked(body))
    assert resolve_checkpoint(url, cache_dir=cache, progress=False).read_bytes() == body


def test_cached_file_with_a_wrong_pin_is_kept(server: RawServer, cache: Path) -> None:
    body = weights()
    url = server.add("/model.ckpt", with_length(body))
    path = resolve_checkpoint(url, cache_dir=cache, progress=False)
    right, wrong = hashlib.sha256(body).hexdigest(), "0" * 64
    with pytest.raises(CheckpointError, match="sha256 mismatch") as info:
        verified_local_checkpoint(url, cache_dir=cache, sha256=wrong, progress=False)
    message = str(info.value)
    assert wrong in message and right in message and str(path) in message and url in message
    assert path.read_bytes() == body  # kept
    assert verified_local_checkpoint(url, cache_dir=cache, sha256=right.upper(), progress=False) == path
    assert resolve_checkpoint(url, cache_dir=cache, progress=False) == path
    assert server.count("/model.ckpt") == 1  # never downloaded again


def test_fresh_download_with_a_wrong_pin_reports_both_hashes(server: RawServer, cache: Path) -> None:
    body = weights()
    url = server.add("/model.ckpt", close_delimited(body))
    with pytest.raises(CheckpointError, match="sha256 mismatch") as info:
        resolve_checkpoint(url, cache_dir=cache, sha256="f" * 64, progress=False)
    assert "f" * 64 in str(info.value) and hashlib.sha256(body).hexdigest() in str(info.value)
    assert cached_files(cache) == []
