"""URL fetching into the media store, and the store itself.

Every test runs with a guard that fails on any connection to a non-loopback address, so refusals
are proven to happen before connecting and no test ever sends traffic off this machine.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from cftclip_core import fetch as fetch_module
from cftclip_core import url_guard
from cftclip_core.errors import FetchError, MediaMissingError, StorageError
from cftclip_core.fetch import fetch_image, fetch_many
from cftclip_core.media_store import MediaStore


def png_bytes(color: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, "PNG")
    return buf.getvalue()


PNG = png_bytes()


class Server:
    """A local HTTP(S) server on 127.0.0.1 with a few routes and a per-path request counter."""

    def __init__(self, tls_context: ssl.SSLContext | None = None) -> None:
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def send_body(self, body: bytes, content_type: str, length: bool = True) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                outer.hits[self.path] += 1
                outer.hosts.append(self.headers.get("Host", ""))
                path = self.path
                if path in ("/img.png", "/other.png"):
                    self.send_body(PNG if path == "/img.png" else png_bytes((1, 2, 3)), "image/png")
                elif path == "/slow.png":
                    outer.release.wait(10)
                    self.send_body(PNG, "image/png")
                elif path == "/announced-huge.png":
                    self.send_response(200)
                    self.send_header("Content-Length", str(50_000_000))
                    self.end_headers()
                    self.wfile.write(PNG)
                elif path == "/undeclared-huge.png":
                    self.send_body(PNG + b"\0" * 200_000, "image/png", length=False)
                elif path == "/page.png":
                    self.send_body(b"<html><body>Please log in</body></html>", "text/html")
                elif path.startswith("/hop/"):  # /hop/N: N redirects in a row, then the image
                    left = int(path.rsplit("/", 1)[1])
                    self.redirect(f"/hop/{left - 1}" if left > 1 else "/img.png")
                elif path == "/to-private":
                    self.redirect("http://10.0.0.1/secret.png")
                else:
                    self.send_error(404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None  # clients hanging up is expected
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def store(tmp_path: Path) -> MediaStore:
    return MediaStore(tmp_path / "media")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every outgoing connection and forbid any that is not loopback."""
    connected: list[str] = []
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        host = address[0]
        connected.append(host)
        assert ipaddress.ip_address(host).is_loopback, f"test tried to connect to {host}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return connected


def fake_dns(monkeypatch: pytest.MonkeyPatch, mapping: dict[str, str]) -> None:
    """Make the given host names resolve to the given addresses; others resolve normally."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in mapping:
            ip = mapping[host]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def media_files(store: MediaStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file() and p.name != fetch_module.URL_INDEX_NAME]


# ---------------------------------------------------------------- downloads


def test_image_is_stored_once_and_not_downloaded_again(server: Server, store: MediaStore) -> None:
    url = server.url("/img.png")
    media = fetch_image(url, store, allow_private=True)
    assert media.sha256 == hashlib.sha256(PNG).hexdigest()
    assert media.path.read_bytes() == PNG and media.path.suffix == ".png"
    assert fetch_image(url, store, allow_private=True) == media
    assert fetch_image(url, MediaStore(store.root), allow_private=True) == media  # index persisted on disk
    assert server.hits["/img.png"] == 1
    assert media_files(store) == [media.path]


def test_same_content_under_two_urls_is_stored_once(server: Server, store: MediaStore) -> None:
    a = fetch_image(server.url("/img.png"), store, allow_private=True)
    b = fetch_image(server.url("/hop/1"), store, allow_private=True)
    assert a.path == b.path and len(media_files(store)) == 1


def test_slow_server_times_out_with_advice(server: Server, store: MediaStore) -> None:
    with pytest.raises(FetchError, match=r"timed out after 0.5 s") as info:
        fetch_image(server.url("/slow.png"), store, allow_private=True, timeout=0.5)
    assert "download the image manually" in str(info.value)
    assert media_files(store) == []


def test_announced_size_over_limit_is_refused(server: Server, store: MediaStore) -> None:
    with pytest.raises(FetchError, match="announces 50,000,000 bytes"):
        fetch_image(server.url("/announced-huge.png"), store, allow_private=True, max_bytes=100_000)


def test_actual_size_over_limit_is_refused_while_streaming(server: Server, store: MediaStore) -> None:
    with pytest.raises(FetchError, match="larger than the limit of 100,000 bytes"):
        fetch_image(server.url("/undeclared-huge.png"), store, allow_private=True, max_bytes=100_000)
    assert media_files(store) == []


def test_web_page_instead_of_image_is_not_stored(server: Server, store: MediaStore) -> None:
    with pytest.raises(FetchError, match="not a usable image") as info:
        fetch_image(server.url("/page.png"), store, allow_private=True)
    assert "copy image address" in str(info.value)
    assert media_files(store) == []


def test_http_error_status(server: Server, store: MediaStore) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_image(server.url("/gone.png"), store, allow_private=True)


def test_three_redirects_are_followed_four_are_not(server: Server, store: MediaStore) -> None:
    media = fetch_image(server.url("/hop/3"), store, allow_private=True)
    assert media.path.read_bytes() == PNG
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch_image(server.url("/hop/4"), store, allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://example.org/a.png", "file:///etc/passwd", "javascript:alert(1)", "http://user:pw@example.org/a.png"]
)
def test_only_plain_http_and_https(store: MediaStore, url: str, loopback_only: list[str]) -> None:
    with pytest.raises(FetchError):
        fetch_image(url, store)
    assert loopback_only == []


# ---------------------------------------------------------------- address checks


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "10.0.0.1", "192.168.1.20", "169.254.169.254", "[::1]", "[::ffff:127.0.0.1]",
        "0.0.0.0", "localhost", "224.0.0.1",
    ],
)
def test_private_addresses_refused_before_connecting(
    server: Server, store: MediaStore, loopback_only: list[str], host: str
) -> None:
    url = f"http://{host}:{server.port}/img.png"
    with pytest.raises(FetchError, match="Refusing to download") as info:
        fetch_image(url, store)
    assert "allow_private=True" in str(info.value)
    assert loopback_only == [] and server.hits == Counter()


@pytest.mark.parametrize(
    ("host", "embedded"),
    [
        ("[2002:7f00:1::1]", "127.0.0.1"),  # 6to4 wrapping loopback
        ("[2002:a00:1::]", "10.0.0.1"),  # 6to4 wrapping a private address
        ("[2001:0:4136:e378:8000:63bf:80ff:fffe]", "127.0.0.1"),  # Teredo, client loopback
        ("[2001:0:a00:1:8000:63bf:3fff:fdd2]", "10.0.0.1"),  # Teredo, server private
    ],
)
def test_ipv6_tunnel_addresses_wrapping_private_ipv4_are_refused(
    store: MediaStore, loopback_only: list[str], host: str, embedded: str
) -> None:
    with pytest.raises(FetchError, match="Refusing to download") as info:
        fetch_image(f"http://{host}/img.png", store)
    assert embedded in str(info.value)
    assert loopback_only == []


def test_host_name_resolving_to_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, store: MediaStore, loopback_only: list[str]
) -> None:
    fake_dns(monkeypatch, {"intranet.example": "10.1.2.3"})
    with pytest.raises(FetchError, match=r"intranet.example resolves to 10.1.2.3, a private address"):
        fetch_image("http://intranet.example/logo.png", store)
    assert loopback_only == []


def test_redirect_to_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, server: Server, store: MediaStore, loopback_only: list[str]
) -> None:
    # Pretend our loopback server is a public host, so only the redirect target is private.
    real_reason = url_guard.refusal_reason
    monkeypatch.setattr(url_guard, "refusal_reason", lambda ip: None if ip == "127.0.0.1" else real_reason(ip))
    with pytest.raises(FetchError, match="resolves to 10.0.0.1, a private address"):
        fetch_image(server.url("/to-private"), store)
    assert loopback_only == ["127.0.0.1"] and server.hits["/to-private"] == 1


def test_connects_to_resolved_address_with_original_host_header(
    monkeypatch: pytest.MonkeyPatch, server: Server, store: MediaStore
) -> None:
    fake_dns(monkeypatch, {"images.example": "127.0.0.1"})
    fetch_image(server.url("/img.png", host="images.example"), store, allow_private=True)
    assert server.hosts == [f"images.example:{server.port}"]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=images.example",
         "-addext", "subjectAltName=DNS:images.example"],
        check=True, capture_output=True,
    )
    return cert, key


def test_https_is_pinned_and_verifies_the_host_name(
    monkeypatch: pytest.MonkeyPatch, tls_files: tuple[Path, Path], store: MediaStore
) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    srv = Server(tls_context=server_ctx)
    try:
        fake_dns(monkeypatch, {"images.example": "127.0.0.1", "other.example": "127.0.0.1"})
        good = srv.url("/img.png", host="images.example", scheme="https")
        media = fetch_image(good, store, allow_private=True, ssl_context=client_ctx)
        assert media.path.read_bytes() == PNG
        with pytest.raises(FetchError, match="certificate"):
            wrong_name = srv.url("/img.png", host="other.example", scheme="https")
            fetch_image(wrong_name, store, allow_private=True, ssl_context=client_ctx)
    finally:
        srv.close()


# ---------------------------------------------------------------- batches


def test_fetch_many_collects_errors_and_reports_progress(server: Server, store: MediaStore) -> None:
    good, other, bad = server.url("/img.png"), server.url("/other.png"), server.url("/page.png")
    fetch_image(good, store, allow_private=True)
    calls: list[tuple[int, int]] = []
    report = fetch_many(
        [good, other, bad, other], store, allow_private=True, progress=lambda done, total: calls.append((done, total))
    )
    assert list(report.stored) == [good, other]
    assert list(report.errors) == [bad] and "not a usable image" in str(report.errors[bad])
    assert calls[0] == (1, 3) and calls[-1] == (3, 3)
    assert server.hits == Counter({"/img.png": 1, "/other.png": 1, "/page.png": 1})
    again = fetch_many([other], store, allow_private=True)
    assert again.stored[other] == report.stored[other] and server.hits["/other.png"] == 1


# ---------------------------------------------------------------- media store


def test_media_store_is_content_addressed(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "m")
    source = tmp_path / "My Holiday Photo (1).JPG"
    source.write_bytes(PNG)
    from_file = store.put_file(source)
    from_bytes = store.put_bytes(PNG, ".png")
    sha = hashlib.sha256(PNG).hexdigest()
    assert from_file == from_bytes  # stored once; the first suffix wins
    assert from_file.path == store.root / sha[:2] / (sha[2:] + ".jpg")
    assert store.path_for(sha) == from_file.path and from_file.size == len(PNG)
    assert sorted(p.name for p in store.root.rglob("*") if p.is_file()) == [sha[2:] + ".jpg"]


def test_media_store_ignores_odd_suffixes_and_reports_missing(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "m")
    media = store.put_bytes(b"abc", "/../../evil.sh;rm")
    assert media.path.parent.parent == store.root and media.path.name == media.sha256[2:]
    with pytest.raises(MediaMissingError, match="re-import"):
        store.path_for("0" * 64)


def test_malformed_url_is_reported_without_stopping_the_batch(server: Server, store: MediaStore) -> None:
    bad, good = "http://[::1/x.jpg", server.url("/img.png")
    report = fetch_many([bad, good], store, allow_private=True)
    assert list(report.stored) == [good]
    assert list(report.errors) == [bad] and "malformed" in str(report.errors[bad])


def test_a_full_disk_ends_the_batch_with_one_message(
    monkeypatch: pytest.MonkeyPatch, server: Server, store: MediaStore
) -> None:
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # Every temporary file fails: the media store's writes and the URL index's.
    monkeypatch.setattr(fetch_module.tempfile, "mkstemp", disk_full)
    with pytest.raises(StorageError, match="the disk is full") as full:
        fetch_many([server.url("/img.png"), server.url("/other.png")], store, allow_private=True)
    assert "media store" in str(full.value) and "Free some space" in str(full.value)
    assert not any(p.is_file() for p in store.root.rglob("*"))


# ---------------------------------------------------------------- one deadline for the whole download


class Trickler:
    """A server on 127.0.0.1 that answers every request one small piece every 0.2 s: each read of the
    client returns well inside any per-read timeout, but the answer never ends."""

    def __init__(self, opening: bytes, piece: bytes) -> None:
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.opening, self.piece = opening, piece
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            try:
                conn.sendall(self.opening)
                for number in range(300):  # 60 s at most
                    if self.stop.wait(0.2):
                        return
                    conn.sendall(self.piece.replace(b"N", str(number).encode()))
            except OSError:  # the client hung up: what a deadline does
                return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.mark.parametrize(("opening", "piece"), [
    (b"HTTP/1.1 200 OK\r\n", b"X-Slow-N: still coming\r\n"),  # one header line after another
    (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n", b"0"),  # a chunk-size line
], ids=["header-lines", "chunk-size-line"])
def test_the_deadline_covers_headers_and_chunk_size_lines(store: MediaStore, opening: bytes, piece: bytes) -> None:
    server = Trickler(opening, piece)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match="timed out after 1 s"):
            fetch_image(f"http://127.0.0.1:{server.port}/img.png", store, allow_private=True, timeout=1.0)
    finally:
        server.close()
    assert time.monotonic() - started < 10  # generous: without one deadline this took 20 s and more
    assert media_files(store) == []


def test_a_cached_url_from_a_private_address_is_checked_again(server: Server, store: MediaStore) -> None:
    url = server.url("/img.png")
    first = fetch_image(url, store, allow_private=True)
    with pytest.raises(FetchError, match="Refusing to download"):
        fetch_image(url, store)  # the cache is no way around the rule
    report = fetch_many([url], store)
    assert list(report.errors) == [url] and not report.stored
    assert fetch_image(url, store, allow_private=True) == first  # allowed again: served from the cache
    assert server.hits["/img.png"] == 1


def test_an_index_from_an_older_version_counts_as_private(server: Server, store: MediaStore) -> None:
    url = server.url("/img.png")
    media = store.put_bytes(PNG, ".png")
    (store.root / fetch_module.URL_INDEX_NAME).write_text(json.dumps({url: media.sha256}))
    with pytest.raises(FetchError, match="Refusing to download"):
        fetch_image(url, store)
    assert fetch_image(url, store, allow_private=True) == media and server.hits["/img.png"] == 0
