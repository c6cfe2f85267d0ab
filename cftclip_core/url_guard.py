"""Which URLs and addresses an image download may use: the safety rules of ``cftclip_core.fetch``.

``parse_url`` accepts only http(s) URLs without credentials and gives the request's parts;
``resolve_checked`` resolves the host and refuses it if any of its addresses is not public (loopback,
private, link-local, multicast, reserved, unspecified, or an IPv6 tunnel address carrying one), unless
private addresses are allowed; ``refusal_reason`` judges one address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from cftclip_core.errors import FetchError

ALLOW_PRIVATE_HINT = (
    "Image URLs must point to public internet hosts, which protects services on your own network. "
    "If you trust this server (e.g. an image server on your intranet), allow private addresses: "
    "--allow-private-urls on the command line, the import page's option, or allow_private=True."
)



@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    request_path: str
    host_header: str


def _malformed(original: str, exc: Exception) -> FetchError:
    return FetchError(f"Cannot download {original}: the URL is malformed ({exc}). Correct the URL in the table.")


def parse_url(url: str, original: str) -> Target:
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
    return Target(scheme, host, port, path, host_header)


def refusal_reason(ip_text: str) -> str | None:
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


def resolve_checked(target: Target, original: str, allow_private: bool) -> tuple[str, bool]:
    """The address to connect to, after checking every address the host resolves to, and whether
    the host has a private (non-public) address."""
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
    private = False
    for ip in addresses:
        reason = refusal_reason(ip)
        private = private or reason is not None
        if reason is not None and not allow_private:
            raise FetchError(
                f"Refusing to download {original}: {target.host} resolves to {ip}, a {reason} address. "
                + ALLOW_PRIVATE_HINT
            )
    return addresses[0], private  # only the first is tried; it is the one that was checked
