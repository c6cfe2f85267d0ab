"""Download images given by URL, once, into the MediaStore, without exposing internal networks.

Safety rules, applied to the first URL and to every redirect hop (at most ``MAX_REDIRECTS``):

- only ``http`` and ``https``; no user names or passwords in URLs;
- the host is resolved first and refused if ANY of its addresses is loopback, private, link-local,
  multicast, reserved, unspecified or otherwise not globally routable, unless
  ``allow_private=True`` (for trusted image servers on one's own network);
- the connection goes to the address that was checked (the first one, IPv4 preferred): the IP
  is pinned, so a second DNS answer cannot redirect it (no DNS rebinding); the original ``Host``
  header is sent, and for https the TLS handshake uses the host name for SNI and certificate
  verification, which stays on;
- ``timeout`` is one budget for the whole download (connect, redirects and body), so a server
  that trickles bytes cannot hold a worker forever. Name resolution itself (getaddrinfo) cannot be
  interrupted by the standard library and is not counted;
- ``max_bytes`` is enforced from Content-Length and again on the bytes actually received;
- the body must decode as an allowed image (``images.decode_image``) before it is stored.

Environment proxies (``HTTP(S)_PROXY``) are not used: pinning needs a direct connection.

Cache: the store root holds ``url_index.json`` mapping URL -> SHA-256 (written atomically). A URL
found there whose file is still in the store is returned without any network traffic.

Progress: ``fetch_many`` takes a ``progress(done, total)`` callable; command-line code can pass
a tqdm bar's update there (tqdm is not imported here).
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

from cftclip_core.errors import FetchError, ImageError
from cftclip_core.images import ImageLimits, decode_image
from cftclip_core.media_store import MediaStore, StoredMedia

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
URL_INDEX_NAME = "url_index.json"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_USER_AGENT = "CFT-CLIP-Studio/1.0 (research image fetcher)"
_CHUNK = 64 * 1024
_ALLOW_PRIVATE_HINT = (
    "Image URLs must point to public internet hosts, which protects services on your own network. "
    "If you trust this server (e.g. an image server on your intranet), allow private addresses: "
    "--allow-private-urls on the command line, the import page's option, or allow_private=True."
)


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


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    request_path: str
    host_header: str


def _malformed(original: str, exc: Exception) -> FetchError:
    return FetchError(f"Cannot download {original}: the URL is malformed ({exc}). Correct the URL in the table.")


def _parse(url: str, original: str) -> _Target:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket: http://[::1/x.jpg
        raise _malformed(original, exc) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(
            f"Cannot download {original}: only http:// and https:// URLs are allowed (got {scheme or 'no scheme'!r}). "
            "For a local file, put its path (relative to the table file) in the image column instead."
        )
    if parts.username is not None or parts.password is not None:
        raise FetchError(
            f"Cannot download {original}: URLs with a user name or password are not supported. "
            "Remove the credentials or download the image manually."
        )
    try:
        port = parts.port or (443 if scheme == "https" else 80)
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise _malformed(original, exc) from None
    if not host:
        raise FetchError(f"Cannot download {original}: the URL has no host name. Correct the URL in the table.")
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None and parts.port != (443 if scheme == "https" else 80):
        host_header += f":{parts.port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return _Target(scheme, host, port, path, host_header)


def _refusal_reason(ip_text: str) -> str | None:
    """Why this address must not be contacted, or None if it is a public unicast address.

    IPv6 addresses that carry an IPv4 address (IPv4-mapped, 6to4, Teredo) are judged by the IPv4
    address too, since a relay or the local stack may deliver them there."""
    addr = ipaddress.ip_address(ip_text.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return _address_reason(addr.ipv4_mapped)
        embedded = [addr.sixtofour] if addr.sixtofour is not None else list(addr.teredo or ())
        for inner in embedded:
            reason = _address_reason(inner)
            if reason is not None:
                return f"tunnel address carrying {inner}, a {reason}"
    return _address_reason(addr)


def _address_reason(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    checks = (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    )
    for attribute, reason in checks:
        if getattr(addr, attribute):
            return reason
    return None if addr.is_global else "non-public"


def _resolve(target: _Target, original: str, allow_private: bool) -> str:
    """The address to connect to, after checking every address the host resolves to."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(
            f"Cannot download {original}: the host {target.host} could not be resolved ({exc}). "
            "Check the URL and your network connection."
        ) from None
    # IPv4 first: a host with both records is most often reachable over IPv4.
    addresses = sorted(dict.fromkeys(info[4][0] for info in infos), key=lambda ip: ":" in ip)
    if not addresses:
        raise FetchError(f"Cannot download {original}: the host {target.host} has no address. Check the URL.")
    if not allow_private:
        for ip in addresses:
            reason = _refusal_reason(ip)
            if reason is not None:
                raise FetchError(
                    f"Refusing to download {original}: {target.host} resolves to {ip}, a {reason} address. "
                    + _ALLOW_PRIVATE_HINT
                )
    return addresses[0]  # only the first is tried; it is the one that was checked


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed IP while TLS (SNI + certificate check) uses the URL's host name."""

    def __init__(self, ip: str, port: int, *, server_hostname: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(ip, port, timeout=timeout, context=context)
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self._server_hostname)
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


def _download(url: str, settings: _Settings) -> bytes:
    deadline = time.monotonic() + settings.timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    current = url
    for _ in range(MAX_REDIRECTS + 1):
        target = _parse(current, url)
        ip = _resolve(target, url, settings.allow_private)
        conn: http.client.HTTPConnection | None = None
        sock: socket.socket | None = None
        response: http.client.HTTPResponse | None = None
        try:
            if target.scheme == "https":
                conn = _PinnedHTTPSConnection(
                    ip, target.port, server_hostname=target.host, timeout=remaining(),
                    context=settings.ssl_context or _default_ssl_context(),
                )
            else:
                conn = http.client.HTTPConnection(ip, target.port, timeout=remaining())
            conn.connect()
            sock = conn.sock  # kept: http.client drops conn.sock when the server closes after the reply
            sock.settimeout(remaining())
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
            while True:
                sock.settimeout(remaining())
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received > settings.max_bytes:
                    raise _too_large(url, settings.max_bytes, "more bytes arrived")
                chunks.append(chunk)
            return b"".join(chunks)
        except TimeoutError:
            raise FetchError(
                f"Downloading {url} timed out after {settings.timeout:g} s. Retry later, raise the "
                "timeout, or download the image manually and put its file path in the table."
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(
                f"Cannot download {url}: the TLS certificate of {target.host} is not valid ({exc.verify_message}). "
                "Use a URL whose certificate is valid or download the image manually."
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(
                f"Cannot download {url}: network error ({exc}). Check your connection and retry, "
                "or download the image manually."
            ) from None
        finally:  # close all three: after a non-200 reply http.client has already let go of conn.sock
            for part in (response, conn, sock):
                if part is not None:
                    part.close()
    raise FetchError(f"Cannot download {url}: more than {MAX_REDIRECTS} redirects. Use the final image URL instead.")


def _too_large(url: str, max_bytes: int, detail: str) -> FetchError:
    return FetchError(
        f"Cannot download {url}: the response is larger than the limit of {max_bytes:,} bytes ({detail}). "
        "Raise max_bytes if the image is legitimate, or download and downscale it manually."
    )


def _fetch_one(url: str, store: MediaStore, settings: _Settings) -> StoredMedia:
    data = _download(url, settings)
    try:
        decoded = decode_image(data, settings.limits, name=url)
    except ImageError as exc:
        raise FetchError(
            f"Downloaded {url} but it is not a usable image: {exc} If the URL is a web page rather than "
            "the picture itself, use the image's own address (right-click the image, copy image address)."
        ) from None
    try:
        media = store.put_bytes(data, decoded.suffix)
    except OSError as exc:
        raise FetchError(
            f"Downloaded {url} but could not save it in the media store at {store.root} ({exc}). "
            "Check that the folder is writable and the disk has free space, then retry."
        ) from None
    logger.info("fetched %s (%d bytes) -> %s", url, len(data), media.sha256)
    return media


class _UrlIndex:
    """url -> sha256, persisted as JSON in the store root. A lost or corrupt index only costs re-downloads."""

    def __init__(self, store: MediaStore) -> None:
        self.store = store
        self.path = store.root / URL_INDEX_NAME
        self.entries: dict[str, str] = {}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable URL index %s (%s); URLs will be downloaded again", self.path, exc)
            return
        if isinstance(loaded, dict):
            self.entries = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, str)}

    def lookup(self, url: str) -> StoredMedia | None:
        sha256 = self.entries.get(url)
        if sha256 is None or not self.store.contains(sha256):
            return None
        return self.store.get(sha256)

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
        cached = index.lookup(url)
        if cached is not None:
            results[url] = cached
        else:
            to_fetch.append(url)
    done = len(results)
    if progress is not None:
        progress(done, len(unique))
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {pool.submit(_fetch_one, url, store, settings): url for url in to_fetch}
            for future in as_completed(futures):
                url = futures[future]
                try:
                    media = future.result()
                except FetchError as exc:
                    results[url] = exc
                except OSError as exc:  # anything unforeseen stays with its URL instead of ending the batch
                    results[url] = FetchError(
                        f"Cannot download {url}: {type(exc).__name__}: {exc}. Retry, or download the image "
                        "manually and put its file path in the table."
                    )
                else:
                    results[url] = media
                    index.entries[url] = media.sha256
                done += 1
                if progress is not None:
                    progress(done, len(unique))
    finally:
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
