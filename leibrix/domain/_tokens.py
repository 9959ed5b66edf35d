"""Bearer tokens and secret redaction: the pure rules, no I/O.

A token is a secret the caller sends as request metadata ``authorization:
Bearer <token>``. The masters never keep the secret itself, only its SHA-256
(:func:`token_hash`): a token minted here carries 256 random bits, so a plain
hash is as good as a keyed one (nobody can search 2^256 inputs), and a leaked
etcd snapshot gives nobody a usable token. Looking a caller up is then one
hash and one dict lookup.

:func:`redact_source` is what an API answer shows of a source URI or DSN: a
password (``scheme://user:PASSWORD@host``, Go-style ``user:PASSWORD@tcp(...)``)
or a secret-looking parameter value (``password=``, ``secret=``, ``token=``,
``key=``...) becomes ``***``, unless the value is only ``${env:...}`` /
``${file:...}`` references: those name where the secret lives, not the secret.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

__all__ = [
    "ADMIN_TOKEN_MIN_CHARS",
    "TOKEN_PREFIX",
    "bearer",
    "new_token",
    "new_token_id",
    "redact_source",
    "token_hash",
]

#: Every token this master mints starts with this (so secret scanners can spot a leaked one).
TOKEN_PREFIX = "lbx_"
#: Shortest admin token an operator may configure (a guessable admin token would defeat the rest).
ADMIN_TOKEN_MIN_CHARS = 24


def new_token() -> str:
    """A fresh bearer token: ``lbx_`` and 256 random bits, URL-safe base64 (47 characters)."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def new_token_id() -> str:
    """A fresh token id (16 hex digits): names a token in ListTokens/RevokeToken; not a secret."""
    return secrets.token_hex(8)


def token_hash(token: str) -> bytes:
    """The SHA-256 digest masters store and look tokens up by."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def bearer(value: str | None) -> str | None:
    """The token of an ``authorization`` metadata value ``Bearer <token>`` (None when absent or malformed)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


_ONLY_REFS = re.compile(r"(\$\{(?:env|file):[^}]*\})+")
# As SQLAlchemy reads a URL: the password runs from the first ':' after the user to the next '@'.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-:]*://[^/@:]*):(?P<pw>[^@]*)@")
_GO_DSN = re.compile(r"^(?P<user>[^:@/]*):(?P<pw>[^@]*)@(?P<rest>(tcp|unix)\(.*)$")
_PARAM = re.compile(
    r"(?i)(?P<k>(?:^|[?&;#\s])[a-z_.]*(?:password|passwd|pwd|secret|token|credential|key)[a-z_.]*=)(?P<v>[^&;#\s]*)")


def _hide(value: str) -> str:
    return value if not value or _ONLY_REFS.fullmatch(value) else "***"


def redact_source(text: str) -> str:
    """``text`` (a URI or DSN) with passwords and secret parameter values replaced by ``***``.

    Examples
    --------
    >>> redact_source("postgresql://app:hunter2@db/x?sslpassword=p")
    'postgresql://app:***@db/x?sslpassword=***'
    >>> redact_source("postgresql://app:${env:PG_PW}@db/x")
    'postgresql://app:${env:PG_PW}@db/x'
    """
    out = _USERINFO.sub(lambda m: f"{m.group('head')}:{_hide(m.group('pw'))}@", text)
    m = _GO_DSN.match(out)
    if m:
        out = f"{m.group('user')}:{_hide(m.group('pw'))}@{m.group('rest')}"
    return _PARAM.sub(lambda m: m.group("k") + _hide(m.group("v")), out)
