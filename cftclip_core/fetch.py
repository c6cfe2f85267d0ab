"""Download images given by URL, once, into the MediaStore, without exposing internal networks.

Safety rules (``cftclip_core.url_guard``), applied to the first URL and to every redirect hop (at most ``MAX_REDIRECTS``):

- only ``http`` and ``https``; no user names or passwords in URLs;
- the host is resolved first and refused if ANY of its addresses is loopback, private, link-local,
  multicast, reserved, unspecified or otherwise not globally routable, unless
  ``allow_private=True`` (for trusted image servers on one's own network);
- the connection goes to the address that was checked (the first one, IPv4 preferred): the IP
  is pinned, so a second DNS answer cannot redirect it (no DNS rebinding); the original ``Host``
  header is sent, and for https the TLS handshake uses the host name for SNI and certificate
  verification, which stays on;
- ``timeout`` is one budget for the whole download (connect, TLS handshake, status line and
  headers, redirects, chunk-size lines and body): when it runs out a timer shuts the connection's
  socket down, so a server that trickles bytes, each read just inside a per-read timeout, cannot
  hold a worker. Name resolution itself (getaddrinfo) cannot be interrupted by the standard
  library and is not counted;
- ``max_bytes`` is enforced from Content-Length and again on the bytes actually received;
- the body must decode as an allowed image (``images.decode_image``) before it is stored.

Environment proxies (``HTTP(S)_PROXY``) are not used: pinning needs a direct connection.

Cache: the store root holds ``url_index.json`` mapping URL -> SHA-256 and whether the download
went through a private address (written atomically). A URL found there whose file is still in the
store is returned without any network traffic, unless it came from a private address and private
addresses are not allowed now: then it is fetched again, under the rules above.

Progress: ``fetch_many`` takes a ``progress(done, total)`` callable; command-line code can pass
a tqdm bar's update there (tqdm is not imported here).
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

from cftclip_core.errors import FetchError, ImageError, StorageError
from cftclip_core.images import ImageLimits, decode_image
from cftclip_core.media_store import MediaStore, StoredMedia
from cftclip_core.url_guard import parse_url, resolve_checked

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
URL_INDEX_NAME = "url_index.json"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_USER_AGENT = "CFT-CLIP-Studio/1.0 (research image fetcher)"
_CHUNK = 64 * 1024
@dataclass(frozen=True)
class _Settings:
    timeout: float
    max_bytes: int
    allow_private: bool
    limits: ImageLimits
    ssl_context: ssl.SSLContext | None


@dataclass
class FetchReport:
    """Outcome of ``fetch_many``: stored media and errors, each keyed by URL (input order)."""

    stored: dict[str, StoredMedia] = field(default_factory=dict)
    errors: dict[str, FetchError] = field(default_factory=dict)


class _Deadline:
    """The one time budget of a download. When it runs out, a timer shuts down every socket the
    download opened, so that a read blocked on a server that trickles bytes ends at once."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError
        return left

    def watch(self, sock: socket.socket) -> None:
        # A duplicate of the descriptor: TLS wrapping detaches the original object, and shutdown acts on
        # the connection whichever descriptor names it, without touching the TLS layer's state.
        duplicate = sock.dup()
        with self._lock:
            self._watched.append(duplicate)
            if self.expired:
                _shut(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._watched:
                _shut(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the other side
        pass


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP, or HTTPS with ``tls``, to a fixed IP: the TLS handshake uses the URL's host name (SNI and
    certificate check), and the socket is watched by the download's deadline."""

    def __init__(self, ip: str, port: int, *, deadline: _Deadline, tls: ssl.SSLContext | None, server_hostname: str) -> None:
        super().__init__(ip, port, timeout=deadline.remaining())
        self._deadline = deadline
        self._tls = tls
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self._deadline.remaining())
        self._deadline.watch(sock)
        if self._tls is None:
            self.sock = sock
            return
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self._server_hostname)
        except BaseException:
            sock.close()
            raise


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    try:  # certifi's CA bundle helps where the system store is missing (some containers, macOS)
        import certifi
    except ImportError:
        return context
    context.load_verify_locations(certifi.where())
    return context


def _download(url: str, settings: _Settings) -> tuple[bytes, bool]:
    """The body of ``url`` after redirects, and whether any hop went to a private address."""
    deadline = _Deadline(settings.timeout)
    try:
        return _follow(url, settings, deadline)
    except TimeoutError:
        raise _timed_out(url, settings) from None
    finally:
        deadline.close()


def _follow(url: str, settings: _Settings, deadline: _Deadline) -> tuple[bytes, bool]:
    current = url
    private = False
    for _ in range(MAX_REDIRECTS + 1):
        target = parse_url(current, url)
        ip, hop_private = resolve_checked(target, url, settings.allow_private)
        private = private or hop_private
        tls = (settings.ssl_context or _default_ssl_context()) if target.scheme == "https" else None
        conn = _PinnedConnection(ip, target.port, deadline=deadline, tls=tls, server_hostname=target.host)
        sock: socket.socket | None = None
        response: http.client.HTTPResponse | None = None
        try:
            conn.connect()
            sock = conn.sock  # kept: http.client drops conn.sock when the server closes after the reply
            headers = {"Host": target.host_header, "User-Agent": _USER_AGENT, "Accept": "image/*"}
            conn.request("GET", target.request_path, headers=headers)
            response = conn.getresponse()
            if response.status in _REDIRECT_STATUSES:
                location = response.getheader("Location")
                if not location:
                    raise FetchError(
                        f"Cannot download {url}: {current} answered HTTP {response.status} (redirect) "
                        "without a Location. Use the final image URL."
                    )
                current = urljoin(current, location.strip())
                logger.debug("%s redirects to %s", url, current)
                continue
            if response.status != 200:
                raise FetchError(
                    f"Cannot download {url}: the server answered HTTP {response.status} {response.reason}. "
                    "Check that the URL still works in a browser; replace it or download the image manually."
                )
            declared = response.getheader("Content-Length")
            if declared is not None and declared.strip().isdigit() and int(declared) > settings.max_bytes:
                raise _too_large(url, settings.max_bytes, f"it announces {int(declared):,} bytes")
            chunks: list[bytes] = []
            received = 0
            while chunk := response.read1(_CHUNK):
                received += len(chunk)
                if received > settings.max_bytes:
                    raise _too_large(url, settings.max_bytes, "more bytes arrived")
                chunks.append(chunk)
            deadline.remaining()  # a socket shut down by the deadline reads as the end of the body
            return b"".join(chunks), private
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(
                f"Cannot download {url}: the TLS certificate of {target.host} is not valid ({exc.verify_message}). "
                "Use a URL whose certificate is valid or download the image manually."
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) or deadline.expired:
                raise TimeoutError from None
            raise FetchError(
                f"Cannot download {url}: network error ({exc}). Check your connection and retry, "
                "or download the image manually."
            ) from None
        finally:  # close all three: after a non-200 reply http.client has already let go of conn.sock
            for part in (response, conn, sock):
                if part is not None:
                    part.close()
    raise FetchError(f"Cannot download {url}: more than {MAX_REDIRECTS} redirects. Use the final image URL instead.")


def _timed_out(url: str, settings: _Settings) -> FetchError:
    return FetchError(
        f"Downloading {url} timed out after {settings.timeout:g} s. Retry later, raise the "
        "timeout, or download the image manually and put its file path in the table."
    )


def _too_large(url: str, max_bytes: int, detail: str) -> FetchError:
    return FetchError(
        f"Cannot download {url}: the response is larger than the limit of {max_bytes:,} bytes ({detail}). "
        "Raise max_bytes if the image is legitimate, or download and downscale it manually."
    )


def _fetch_one(url: str, store: MediaStore, settings: _Settings) -> tuple[StoredMedia, bool]:
    data, private = _download(url, settings)
    try:
        decoded = decode_image(data, settings.limits, name=url)
    except ImageError as exc:
        raise FetchError(
            f"Downloaded {url} but it is not a usable image: {exc} If the URL is a web page rather than "
            "the picture itself, use the image's own address (right-click the image, copy image address)."
        ) from None
    media = store.put_bytes(data, decoded.suffix)  # StorageError (e.g. a full disk) ends the whole batch
    logger.info("fetched %s (%d bytes) -> %s", url, len(data), media.sha256)
    return media, private


class _UrlIndex:
    """url -> (sha256, came from a private address), persisted as JSON in the store root. A lost or
    corrupt index only costs re-downloads."""

    def __init__(self, store: MediaStore) -> None:
        self.store = store
        self.path = store.root / URL_INDEX_NAME
        self.entries: dict[str, dict[str, object]] = {}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable URL index %s (%s); URLs will be downloaded again", self.path, exc)
            return
        if isinstance(loaded, dict):
            for url, entry in loaded.items():
                if isinstance(entry, str):  # written by an older version, which did not record the address
                    entry = {"sha256": entry, "private": True}
                if isinstance(url, str) and isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                    self.entries[url] = {"sha256": entry["sha256"], "private": entry.get("private") is not False}

    def lookup(self, url: str, allow_private: bool) -> StoredMedia | None:
        """The stored image of ``url``; None if it must be downloaded (again), which also applies when
        it came from a private address and private addresses are not allowed now."""
        entry = self.entries.get(url)
        if entry is None or (entry["private"] and not allow_private):
            return None
        sha256 = str(entry["sha256"])
        try:
            return self.store.get(sha256) if self.store.contains(sha256) else None
        except ValueError:  # not a SHA-256: a hand-edited index
            return None

    def add(self, url: str, media: StoredMedia, private: bool) -> None:
        self.entries[url] = {"sha256": media.sha256, "private": private}

    def save(self) -> None:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.store.root)
        except OSError as exc:
            logger.warning("cannot save the URL index %s (%s); URLs will be downloaded again", self.path, exc)
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.entries, f, indent=0, sort_keys=True)
            os.replace(tmp_name, self.path)
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            logger.warning("cannot save the URL index %s (%s); URLs will be downloaded again", self.path, exc)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def _settings(
    timeout: float,
    max_bytes: int,
    allow_private: bool,
    limits: ImageLimits | None,
    ssl_context: ssl.SSLContext | None,
) -> _Settings:
    if timeout <= 0 or max_bytes <= 0:
        raise ValueError("timeout and max_bytes must be positive")
    return _Settings(timeout, max_bytes, allow_private, limits or ImageLimits(max_bytes=max_bytes), ssl_context)


def fetch_image(
    url: str,
    store: MediaStore,
    *,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_private: bool = False,
    limits: ImageLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> StoredMedia:
    """Download one image into ``store`` (or return it from the URL index); FetchError on failure.

    ``limits`` defaults to ``ImageLimits(max_bytes=max_bytes)``; ``ssl_context`` lets a site
    trust its own certificate authority (verification is never turned off here).
    """
    report = fetch_many([url], store, timeout=timeout, max_bytes=max_bytes, allow_private=allow_private,
                        limits=limits, ssl_context=ssl_context, workers=1)
    for error in report.errors.values():
        raise error
    return next(iter(report.stored.values()))


def fetch_many(
    urls: Iterable[str],
    store: MediaStore,
    *,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_private: bool = False,
    limits: ImageLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> FetchReport:
    """Download many URLs (duplicates once, cached ones not at all), ``workers`` at a time.

    Errors do not stop the batch: they are collected in ``FetchReport.errors`` so the caller can
    show them all and decide (an importer should refuse the whole import if any failed).
    ``progress(done, total)`` is called from the calling thread after each URL.
    """
    settings = _settings(timeout, max_bytes, allow_private, limits, ssl_context)
    unique = list(dict.fromkeys(u.strip() for u in urls))
    index = _UrlIndex(store)
    results: dict[str, StoredMedia | FetchError] = {}
    to_fetch: list[str] = []
    for url in unique:
        cached = index.lookup(url, allow_private)
        if cached is not None:
            results[url] = cached
        else:
            to_fetch.append(url)
    done = len(results)
    if progress is not None:
        progress(done, len(unique))
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = {pool.submit(_fetch_one, url, store, settings): url for url in to_fetch}
        for future in as_completed(futures):
            url = futures[future]
            try:
                media, private = future.result()
            except FetchError as exc:
                results[url] = exc
            except OSError as exc:  # anything unforeseen stays with its URL instead of ending the batch
                results[url] = FetchError(
                    f"Cannot download {url}: {type(exc).__name__}: {exc}. Retry, or download the image "
                    "manually and put its file path in the table."
                )
            else:
                results[url] = media
                index.add(url, media, private)
            done += 1
            if progress is not None:
                progress(done, len(unique))
    except StorageError:  # the store cannot take more files: the other downloads would fail the same way
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        if to_fetch:
            index.save()
    report = FetchReport()
    for url in unique:
        outcome = results.get(url)
        if isinstance(outcome, StoredMedia):
            report.stored[url] = outcome
        elif isinstance(outcome, FetchError):
            report.errors[url] = outcome
    return report
