"""Checkpoint resolution / download / loading, against a local HTTP server started by the tests (127.0.0.1 only)."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

from smartpretrain.io.checkpoint_sources import (
    HFLocation,
    default_cache_dir,
    parse_hf_uri,
    resolve_checkpoint,
    url_cache_name,
)
from smartpretrain.io.checkpoints import (
    ArchitectureMismatchError,
    CheckpointError,
    LoadReport,
    extract_state_dict,
    load_checkpoint,
    load_into,
)
from tests.io.conftest import cached_files, serving

COMMIT = "c0ffee" + "0" * 34


# ----------------------------------------------------------------------------------------------------------------
# Models and checkpoint bytes
# ----------------------------------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, 2)
        self.register_buffer("scale", torch.ones(2))


class OtherNet(nn.Module):
    """A different architecture: one shared key with another shape, other keys absent / extra."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 16)
        self.decoder = nn.Linear(16, 2)


class Task(nn.Module):
    """A Lightning-module-like wrapper: keys become ``model.*`` / ``criterion.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Net()
        self.criterion = nn.Linear(1, 1)


def seeded_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def to_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def lightning_checkpoint(task: nn.Module) -> dict:
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": task.state_dict(),
        "hyper_parameters": {"lr": 1e-3, "hidden": 8, "name": "net"},
        "optimizer_states": [],
        "lr_schedulers": [],
    }


TRIPPED: list[str] = []


def _trip() -> dict:
    """What an evil pickle would run; weights_only=True must never call it."""
    TRIPPED.append("code executed")
    return {}


class Evil:
    def __reduce__(self):
        return (_trip, ())


@dataclass
class Meta:
    note: str = "x"


# ----------------------------------------------------------------------------------------------------------------
# Local server
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False  # announce more bytes than are sent, then close the connection


class LocalServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self, send_body: bool) -> None:
                with server._lock:
                    server.requests.append((self.command, self.path))
                route = server.routes.get(self.path)
                if route is None:
                    route = Route(b"not found", status=404)
                length = len(route.body) + (1000 if route.truncate else 0)
                self.send_response(route.status)
                self.send_header("Content-Length", str(length))
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if send_body:
                    self.wfile.write(route.body)
                self.close_connection = True

            def do_GET(self) -> None:
                self._serve(True)

            def do_HEAD(self) -> None:
                self._serve(False)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def add(self, path: str, body: bytes, **kwargs: object) -> str:
        self.routes[path] = Route(body, **kwargs)  # type: ignore[arg-type]
        return self.base + path

    def add_hf(self, repo: str, filename: str, body: bytes, revision: str = "main") -> None:
        """The two things hf_hub_download needs from ``/{repo}/resolve/{revision}/{filename}`` (HEAD, then GET):
        an ETag (names the blob) and X-Repo-Commit (names the snapshot)."""
        etag = hashlib.sha256(body).hexdigest()
        self.add(f"/{repo}/resolve/{revision}/{filename}", body, headers={"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT})

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and p == path)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    with serving(srv.httpd, srv.thread):
        yield srv


# ----------------------------------------------------------------------------------------------------------------
# http(s)://
# ----------------------------------------------------------------------------------------------------------------


def test_download_load_and_weights_equal(server: LocalServer, cache: Path) -> None:
    source = seeded_net(0)
    url = server.add("/ckpt/model.pt", to_bytes(source.state_dict()))
    ckpt = load_checkpoint(url, cache_dir=cache, progress=False)
    target = seeded_net(1)
    report = load_into(target, extract_state_dict(ckpt))
    assert report.ok and sorted(report.loaded) == sorted(source.state_dict())
    assert_same_weights(source, target)
    assert [p.name for p in cached_files(cache)] == [url_cache_name(url)]


def test_second_call_hits_the_cache(server: LocalServer, cache: Path) -> None:
    body = to_bytes(seeded_net().state_dict())
    url = server.add("/model.pt", body)
    first = resolve_checkpoint(url, cache_dir=cache, progress=False)
    second = resolve_checkpoint(url, cache_dir=cache, progress=False)
    assert first == second and first.read_bytes() == body
    assert server.count("GET", "/model.pt") == 1
    # another URL with the same basename does not collide with the first
    other = server.add("/other/model.pt", b"different")
    assert resolve_checkpoint(other, cache_dir=cache, progress=False).read_bytes() == b"different"
    assert len(cached_files(cache)) == 2


def test_progress_bar_does_not_break_download(server: LocalServer, cache: Path) -> None:
    url = server.add("/model.pt", b"x" * 3_000_000)
    assert resolve_checkpoint(url, cache_dir=cache, progress=True).stat().st_size == 3_000_000


def test_sha256_match(server: LocalServer, cache: Path) -> None:
    body = to_bytes(seeded_net().state_dict())
    url = server.add("/model.pt", body)
    digest = hashlib.sha256(body).hexdigest()
    path = resolve_checkpoint(url, cache_dir=cache, sha256=digest.upper(), progress=False)
    assert path.read_bytes() == body
    # a cache hit is checked against the pin too, without downloading again
    assert resolve_checkpoint(url, cache_dir=cache, sha256=digest, progress=False) == path
    assert server.count("GET", "/model.pt") == 1


def test_sha256_mismatch_caches_nothing(server: LocalServer, cache: Path) -> None:
    body = to_bytes(seeded_net().state_dict())
    url = server.add("/model.pt", body)
    wrong = "0" * 64
    with pytest.raises(CheckpointError, match="sha256 mismatch") as info:
        resolve_checkpoint(url, cache_dir=cache, sha256=wrong, progress=False)
    assert wrong in str(info.value) and hashlib.sha256(body).hexdigest() in str(info.value)
    assert url in str(info.value)
    assert cached_files(cache) == []


def test_stale_cache_entry_is_reported_and_kept(server: LocalServer, cache: Path) -> None:
    body = b"the real weights"
    url = server.add("/model.pt", body)
    cache.mkdir(parents=True)
    cached = cache / url_cache_name(url)
    cached.write_bytes(b"corrupted")
    digest = hashlib.sha256(body).hexdigest()
    with pytest.raises(CheckpointError, match="sha256 mismatch") as info:
        resolve_checkpoint(url, cache_dir=cache, sha256=digest, progress=False)
    assert digest in str(info.value) and hashlib.sha256(b"corrupted").hexdigest() in str(info.value)
    assert str(cached) in str(info.value)
    # the cached file is kept (the pin may be the wrong one) and nothing is downloaded; deleting it fetches again
    assert cached.read_bytes() == b"corrupted" and server.count("GET", "/model.pt") == 0
    cached.unlink()
    path = resolve_checkpoint(url, cache_dir=cache, sha256=digest, progress=False)
    assert path.read_bytes() == body and server.count("GET", "/model.pt") == 1


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_names_url_and_status(server: LocalServer, cache: Path, status: int) -> None:
    url = server.add("/missing.ckpt", b"nope", status=status) if status != 404 else server.base + "/missing.ckpt"
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(url, cache_dir=cache, progress=False)
    assert str(status) in str(info.value) and url in str(info.value)
    assert cached_files(cache) == []


def test_unreachable_server(cache: Path) -> None:
    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens on this port any more
    with pytest.raises(CheckpointError, match="could not download"):
        resolve_checkpoint(f"http://127.0.0.1:{port}/m.pt", cache_dir=cache, progress=False, timeout=5)


def test_truncated_download_leaves_nothing(server: LocalServer, cache: Path) -> None:
    body = to_bytes(seeded_net().state_dict())
    url = server.add("/model.pt", body[: len(body) // 2], truncate=True)
    with pytest.raises(CheckpointError, match="truncated") as info:
        resolve_checkpoint(url, cache_dir=cache, progress=False, timeout=10)
    assert url in str(info.value)
    assert cached_files(cache) == []
    # the next (good) response is downloaded, not served from a half-written cache entry
    server.add("/model.pt", body)
    assert resolve_checkpoint(url, cache_dir=cache, progress=False).read_bytes() == body


def test_default_cache_dir_from_environment(server: LocalServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SMARTPRETRAIN_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    url = server.add("/model.pt", b"abc")
    assert resolve_checkpoint(url, progress=False).parent == tmp_path / "envcache"
    monkeypatch.delenv("SMARTPRETRAIN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "smartpretrain" / "checkpoints"


def test_url_cache_name() -> None:
    a = url_cache_name("https://example.invalid/a/model.ckpt?token=secret")
    b = url_cache_name("https://example.invalid/b/model.ckpt")
    assert a != b and a.endswith("-model.ckpt") and b.endswith("-model.ckpt") and "secret" not in a
    assert url_cache_name("https://example.invalid/").endswith("-checkpoint")


# ----------------------------------------------------------------------------------------------------------------
# Local files and loading
# ----------------------------------------------------------------------------------------------------------------


def test_local_path_and_file_url(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(to_bytes(seeded_net().state_dict()))
    assert resolve_checkpoint(path) == path
    assert resolve_checkpoint(str(path)) == path
    assert resolve_checkpoint(path.as_uri()) == path
    assert resolve_checkpoint(path, sha256=hashlib.sha256(path.read_bytes()).hexdigest()) == path
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        resolve_checkpoint(path, sha256="f" * 64)
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        resolve_checkpoint(tmp_path)


@pytest.mark.parametrize("payload", [os.urandom(4096), b"", b"PK\x03\x04 not really a zip"])
def test_non_checkpoint_file(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "junk.ckpt"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_non_checkpoint_download(server: LocalServer, cache: Path) -> None:
    url = server.add("/junk.ckpt", os.urandom(2048))
    with pytest.raises(CheckpointError, match=r"junk\.ckpt"):
        load_checkpoint(url, cache_dir=cache, progress=False)


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    path.write_bytes(to_bytes({"state_dict": seeded_net().state_dict(), "payload": Evil()}))
    TRIPPED.clear()
    with pytest.raises(CheckpointError, match="refusing to load") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "_trip" in str(info.value)
    assert TRIPPED == []  # the pickle's code never ran


def test_safe_globals_allow_trusted_classes(tmp_path: Path) -> None:
    path = tmp_path / "meta.ckpt"
    path.write_bytes(to_bytes({"state_dict": seeded_net().state_dict(), "meta": Meta("hello")}))
    with pytest.raises(CheckpointError, match="Meta"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, safe_globals=[Meta])
    assert ckpt["meta"] == Meta("hello")


def test_checkpoint_that_is_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    path.write_bytes(to_bytes(torch.zeros(3)))
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------------------------------------------
# extract_state_dict
# ----------------------------------------------------------------------------------------------------------------


def test_lightning_checkpoint_prefix_stripping(server: LocalServer, cache: Path) -> None:
    torch.manual_seed(3)
    task = Task()
    url = server.add("/lightning.ckpt", to_bytes(lightning_checkpoint(task)))
    ckpt = load_checkpoint(url, cache_dir=cache, progress=False)
    assert ckpt["hyper_parameters"]["lr"] == 1e-3
    state = extract_state_dict(ckpt, prefix="model.")
    assert set(state) == set(task.model.state_dict())  # criterion.* dropped, model. stripped
    target = seeded_net(9)
    assert load_into(target, state).ok
    assert_same_weights(task.model, target)
    # without the prefix the keys do not fit, and the error says which prefix to strip
    with pytest.raises(ArchitectureMismatchError, match=r"prefix_map=\{'model.': ''\}"):
        load_into(seeded_net(9), extract_state_dict(ckpt))


def test_auto_strip_and_nesting() -> None:
    net = seeded_net(4)
    wrapped = {f"model.{k}": v for k, v in net.state_dict().items()}
    # auto_strip removes a first component shared by all keys (Lightning's model., DataParallel's module.)
    assert set(extract_state_dict({"state_dict": wrapped}, auto_strip=True)) == set(net.state_dict())
    # ... and nothing when the keys do not share one
    assert extract_state_dict(net.state_dict(), auto_strip=True).keys() == net.state_dict().keys()
    # nested {"model": ...} and {"model": {"state_dict": ...}}
    assert extract_state_dict({"model": net.state_dict(), "epoch": 1}).keys() == net.state_dict().keys()
    assert extract_state_dict({"model": {"state_dict": wrapped}}, prefix="model").keys() == net.state_dict().keys()
    # a prefix no key carries leaves a plain state_dict as it is (finetune passes prefix="backbone.")
    assert extract_state_dict(net.state_dict(), prefix="backbone.").keys() == net.state_dict().keys()
    with pytest.raises(CheckpointError, match="no state_dict found"):
        extract_state_dict({"epoch": 1, "hyper_parameters": {}})


# ----------------------------------------------------------------------------------------------------------------
# load_into
# ----------------------------------------------------------------------------------------------------------------


def test_wrong_architecture_is_a_clear_error() -> None:
    state = seeded_net(0).state_dict()  # encoder 8 wide, norm, head, scale
    model = OtherNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ArchitectureMismatchError) as info:
        load_into(model, state)
    message = str(info.value)
    assert "OtherNet" in message and "wrong architecture" in message
    for key in ("decoder.weight", "decoder.bias"):  # missing
        assert key in message
    for key in ("head.weight", "norm.bias", "scale"):  # unexpected
        assert key in message
    assert "encoder.weight checkpoint (8, 4) vs model (16, 4)" in message  # shape mismatch
    report = info.value.report
    assert sorted(report.missing) == ["decoder.bias", "decoder.weight"]
    assert sorted(report.unexpected) == ["head.bias", "head.weight", "norm.bias", "norm.weight", "scale"]
    assert ("encoder.weight", (8, 4), (16, 4)) in report.reshaped
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


def test_non_strict_loads_matching_and_never_reshaped() -> None:
    source = seeded_net(0)
    model = Net(hidden=16)
    model.head = nn.Linear(16, 2)
    before = model.state_dict()["encoder.weight"].clone()
    report = load_into(model, source.state_dict(), strict=False)
    assert "scale" in report.loaded and "head.bias" in report.loaded
    assert {name for name, _, _ in report.reshaped} == {
        "encoder.weight",
        "encoder.bias",
        "norm.weight",
        "norm.bias",
        "head.weight",
    }
    assert torch.equal(model.state_dict()["encoder.weight"], before)
    assert torch.equal(model.head.bias, source.head.bias)


def test_error_message_is_capped_with_counts() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(30)])
    state = {f"other.{i}.weight": torch.zeros(1) for i in range(45)}
    with pytest.raises(ArchitectureMismatchError) as info:
        load_into(model, state)
    message = str(info.value)
    assert "missing in checkpoint (60)" in message and "unexpected in checkpoint (45)" in message
    assert "(+40 more)" in message and "(+25 more)" in message


def test_prefix_map_and_whole_checkpoint() -> None:
    source = seeded_net(5)
    state = {f"net.{k}": v for k, v in source.state_dict().items()}
    target = seeded_net(6)
    report = load_into(target, {"state_dict": state, "epoch": 2}, prefix_map={"net.": ""})
    assert report.ok
    assert_same_weights(source, target)
    # longest prefix wins
    task = Task()
    state = {f"enc.{k}": v for k, v in source.state_dict().items()} | {"crit.weight": torch.ones(1, 1)}
    report = load_into(task, state, strict=False, prefix_map={"enc.": "model.", "crit.": "criterion."})
    assert report.missing == ["criterion.bias"] and not report.unexpected
    assert_same_weights(source, task.model)


def test_load_report_str() -> None:
    report = LoadReport(
        loaded=["a", "b"],
        missing=[f"m{i}" for i in range(8)],
        unexpected=["u"],
        reshaped=[("w", (2, 3), (3, 3))],
    )
    text = str(report)
    assert text.startswith("2 loaded, 8 missing, 1 unexpected, 1 shape-mismatched")
    assert "m0, m1, m2, m3, m4, ... (+3 more)" in text and "m5" not in text
    assert "w checkpoint (2, 3) vs model (3, 3)" in text
    assert not report.ok and LoadReport(loaded=["a"]).ok


# ----------------------------------------------------------------------------------------------------------------
# hf://
# ----------------------------------------------------------------------------------------------------------------


def test_parse_hf_uri() -> None:
    assert parse_hf_uri("hf://org/repo/file.ckpt") == HFLocation("org/repo", "file.ckpt")
    assert parse_hf_uri("hf://org/repo/a/b/file.ckpt@v1.0") == HFLocation("org/repo", "a/b/file.ckpt", "v1.0")
    assert parse_hf_uri("hf://org/repo/f.ckpt@refs/pr/1").revision == "refs/pr/1"
    assert parse_hf_uri("hf://datasets/org/data/x.pt") == HFLocation("org/data", "x.pt", None, "dataset")
    for bad in ("hf://org/repo", "hf://org/repo/file.ckpt@", "https://org/repo/f"):
        with pytest.raises(CheckpointError):
            parse_hf_uri(bad)


@pytest.fixture
def hf_server(server: LocalServer, monkeypatch) -> Iterator[LocalServer]:
    """Point huggingface_hub at the local server through HF_ENDPOINT (read by resolve_checkpoint at call time).

    Guards: any attempt to resolve a host other than 127.0.0.1 / localhost fails the test (huggingface_hub's
    import-time endpoint copy is used for side requests, e.g. its agent-harness registry, which is pre-set empty).
    """
    import socket

    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from huggingface_hub.utils import _detect_agent
    except ImportError:  # older huggingface_hub: no such side request
        pass
    else:
        monkeypatch.setattr(_detect_agent, "_registry", getattr(_detect_agent, "_EMPTY_REGISTRY", None), raising=False)
    foreign: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1", b"localhost"):
            foreign.append(str(host))
            raise OSError(f"test refused to resolve non-local host {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    yield server
    assert foreign == [], f"huggingface_hub tried to reach {foreign}"


def test_hf_download_through_local_endpoint(hf_server: LocalServer, cache: Path) -> None:
    source = seeded_net(7)
    hf_server.add_hf("org/repo", "file.ckpt", to_bytes(lightning_checkpoint(nn.ModuleDict({"model": source}))))
    ckpt = load_checkpoint("hf://org/repo/file.ckpt", cache_dir=cache, progress=False)
    target = seeded_net(8)
    assert load_into(target, extract_state_dict(ckpt, prefix="model.")).ok
    assert_same_weights(source, target)
    path = "/org/repo/resolve/main/file.ckpt"
    assert hf_server.count("GET", path) == 1
    # second call: huggingface_hub revalidates (HEAD) but does not download again
    again = resolve_checkpoint("hf://org/repo/file.ckpt", cache_dir=cache, progress=False)
    assert hf_server.count("GET", path) == 1
    assert again.is_relative_to(cache / "hf") and COMMIT in str(again)


def test_hf_revision_subfolder_and_sha256(hf_server: LocalServer, cache: Path) -> None:
    body = to_bytes(seeded_net().state_dict())
    hf_server.add_hf("org/repo", "weights/sub/model.pt", body, revision="v1.0")
    digest = hashlib.sha256(body).hexdigest()
    path = resolve_checkpoint("hf://org/repo/weights/sub/model.pt@v1.0", cache_dir=cache, sha256=digest,
                              progress=True)  # fmt: skip
    assert path.read_bytes() == body and path.name == "model.pt"
    assert hf_server.count("GET", "/org/repo/resolve/v1.0/weights/sub/model.pt") == 1


def test_hf_sha256_mismatch_keeps_the_file(hf_server: LocalServer, cache: Path) -> None:
    hf_server.add_hf("org/repo", "file.ckpt", b"some bytes")
    with pytest.raises(CheckpointError, match="sha256 mismatch") as info:
        resolve_checkpoint("hf://org/repo/file.ckpt", cache_dir=cache, sha256="1" * 64, progress=False)
    assert "1" * 64 in str(info.value) and hashlib.sha256(b"some bytes").hexdigest() in str(info.value)
    # the blob stays (the pin may be the wrong one)
    assert [p for p in cached_files(cache) if p.read_bytes() == b"some bytes"]


def test_hf_missing_file(hf_server: LocalServer, cache: Path) -> None:
    with pytest.raises(CheckpointError, match=r"hf://org/repo/absent\.ckpt"):
        resolve_checkpoint("hf://org/repo/absent.ckpt", cache_dir=cache, progress=False, timeout=10)
    assert hf_server.count("HEAD", "/org/repo/resolve/main/absent.ckpt") >= 1


def test_real_lightning_trainer_checkpoint(tmp_path: Path) -> None:
    """A checkpoint written by Trainer.save_checkpoint (loops, callbacks, optimizer states) loads with
    weights_only=True, and its backbone weights go into a bare backbone through prefix="backbone."."""
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self, lr: float = 1e-2) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.backbone = Net()

        def training_step(self, batch, batch_idx):
            return self.backbone.head(self.backbone.encoder(batch[0])).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    module = Module()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = pl.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, data)
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    ckpt = load_checkpoint(path)
    assert ckpt["hyper_parameters"]["lr"] == 1e-2 and ckpt["optimizer_states"]
    target = seeded_net(1)
    assert load_into(target, extract_state_dict(ckpt, prefix="backbone.")).ok
    assert_same_weights(module.backbone, target)
