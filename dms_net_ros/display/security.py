"""Who may see the display: loopback by default, a token for anything else.

The page shows patient photographs and findings, so the rules are strict and simple:

* the server binds 127.0.0.1 unless told otherwise; a non-loopback ``host`` without a token
  is refused at start (`check_bind`), never served openly;
* with a token, every request (page, static files, API, images, WebSocket) must carry it:
  ``?token=``, ``Authorization: Bearer``, or the cookie the page load with ``?token=`` sets
  (HttpOnly, SameSite=Strict, so another site cannot ride on it); anything else is 401;
* every response carries a Content-Security-Policy without inline script, nosniff, no
  referrer (a tokened URL never leaks in a Referer) and no-store (no patient image in a
  browser cache on disk).
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from dms_net_core.errors import first_line

COOKIE = "dms_display_token"
CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; script-src 'self'; "
       "style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class DisplayConfigError(ValueError):
    """A host/token combination the display refuses; ``str(err)`` is one line: cause and fix."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "", "0.0.0.0" is an address; a host name other than localhost is not known to be local
        return False


def read_token(token: str, token_file: str) -> str:
    """The token parameter, else the first line of ``token_file`` ("" when neither is set)."""
    if token:
        return token.strip()
    if not token_file:
        return ""
    try:
        token = first_line(Path(token_file).expanduser().read_text())
    except OSError as exc:
        token, why = "", type(exc).__name__
    else:
        why = "the file is empty"
    if not token:
        raise DisplayConfigError(f"cannot read a token from token_file {token_file!r} ({why}): "
                                 "write the token on its first line or pass token:=...")
    return token


def check_bind(host: str, token: str) -> None:
    """Refuse a non-loopback bind without a token."""
    if not is_loopback(host) and not token:
        raise DisplayConfigError(f"host {host!r} is not a loopback address and no token is set: pass token:=<secret> "
                                 "or token_file:=<path>, or keep host:=127.0.0.1")


def token_matches(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), token.encode())


def request_token(query: dict, headers: dict, cookies: dict) -> str | None:
    """The token a request carries: query, then Bearer header, then cookie."""
    if query.get("token"):
        return query["token"]
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return cookies.get(COOKIE)
