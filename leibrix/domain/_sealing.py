"""Sealing source credentials at rest: AES-256-GCM over the secret parts of a URI or DSN, no I/O.

A dataset record keeps the admitted request whole (it is the LoadPlan's
source), so a catalog URI such as ``postgresql://app:hunter2@db/x`` would sit
in etcd, in its snapshots and in the embedded member's WAL in clear. With a
:class:`Keyring`, :func:`seal_source` replaces each inline secret of such a
string by a sealed reference::

    postgresql://app:${sealed:3f9a1c07:BASE64URL(nonce || ciphertext || tag)}@db/x

The rest of the string (scheme, user, host, database) stays readable, and the
pieces that are sealed are exactly the ones :func:`leibrix.domain._tokens.redact_source`
hides: the password of ``scheme://user:PASSWORD@host`` and of a Go-style
``user:PASSWORD@tcp(...)``, and the value of any ``password``/``secret``/
``token``/``key``-like parameter. Values that are only ``${env:...}`` /
``${file:...}`` references are left as written (they name where the secret
lives, not the secret), and so are values that are already sealed.

**Keys and key ids.** A key is 256 random bits. Its id is the first 8 hex
digits of SHA-256 over a fixed label and the key: stable, not secret, and
written into every sealed reference, so a record says which key sealed it.
A keyring holds several keys: the first seals, every one unseals. Rotating is
therefore: put the new key first (keep the old one after it) on every master,
restart them; each record is sealed with the new key the next time it is
written; drop the old key once no record names it.

**Binding.** The associated data of each seal is a context the caller gives
(the dataset record's ``tenant/dataset``): a sealed value copied into another
tenant's request does not unseal there.

:func:`unseal_source` is the inverse. A reference whose key is not in the
keyring, or whose ciphertext does not authenticate, raises
:class:`SealedSecretError` naming the key id and never any plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Sequence

from leibrix.domain._tokens import _GO_DSN, _PARAM, _USERINFO

__all__ = ["KEY_BYTES", "Keyring", "SealedSecretError", "is_sealed", "key_id", "parse_key", "seal_source",
           "sealed_key_ids", "unseal_source"]

#: Key length: AES-256.
KEY_BYTES = 32
_NONCE = 12
_SEALED = re.compile(r"\$\{sealed:([0-9a-f]{8}):([A-Za-z0-9_-]+)\}")
# A value that needs no sealing: empty, or only ${env:...}/${file:...}/${sealed:...} references.
_NO_SECRET = re.compile(r"(\$\{(?:env|file):[^}]*\}|\$\{sealed:[0-9a-f]{8}:[A-Za-z0-9_-]+\})*")


class SealedSecretError(ValueError):
    """A sealed credential cannot be unsealed: its key is not configured, or it does not authenticate."""

    def __init__(self, message: str, key_ids: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.key_ids = tuple(key_ids)


def key_id(key: bytes) -> str:
    """The id a sealed reference names ``key`` by: 8 hex digits, not secret."""
    return hashlib.sha256(b"leibrix-secrets-key\x00" + key).hexdigest()[:8]


def parse_key(data: bytes, *, what: str = "key") -> bytes:
    """The 256-bit key in a key file's ``data``: 32 raw bytes, 64 hex digits or base64 of 32 bytes.

    Text forms may end with a newline (``openssl rand -hex 32 > FILE``).

    Raises
    ------
    ValueError
        ``data`` holds no 256-bit key in any of these forms; the message names
        ``what`` and the length found, never the bytes.
    """
    if len(data) == KEY_BYTES:
        return bytes(data)
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            key = decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise ValueError(f"{what}: not a 256-bit key ({len(data)} bytes; expected 32 raw bytes, 64 hex digits or "
                     "base64 of 32 bytes, e.g. `openssl rand -hex 32`)")


class Keyring:
    """AES-256-GCM keys by id: the first seals, all unseal.

    Parameters
    ----------
    keys:
        Raw 32-byte keys, the sealing key first. At least one; no two equal.
    """

    __slots__ = ("_aead", "primary")

    def __init__(self, keys: Sequence[bytes]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ValueError("a keyring needs at least one key")
        self._aead: dict[str, AESGCM] = {}
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ValueError(f"a key must be {KEY_BYTES} bytes, not {len(key)}")
            kid = key_id(key)
            if kid in self._aead:
                raise ValueError(f"key {kid} is given twice")
            self._aead[kid] = AESGCM(key)
        #: Id of the key that seals.
        self.primary = key_id(keys[0])

    @property
    def ids(self) -> tuple[str, ...]:
        """Every key id, the sealing key's first."""
        return tuple(self._aead)

    def seal(self, plaintext: str, context: bytes) -> str:
        """``${sealed:<key id>:<base64url>}`` of ``plaintext`` under the sealing key, bound to ``context``."""
        nonce = os.urandom(_NONCE)
        box = self._aead[self.primary].encrypt(nonce, plaintext.encode("utf-8", "surrogatepass"), context)
        return "${sealed:%s:%s}" % (self.primary, base64.urlsafe_b64encode(nonce + box).rstrip(b"=").decode())

    def unseal(self, kid: str, sealed: str, context: bytes) -> str:
        """The plaintext of one sealed reference's parts; :class:`SealedSecretError` if it cannot be."""
        from cryptography.exceptions import InvalidTag

        aead = self._aead.get(kid)
        if aead is None:
            raise SealedSecretError(f"sealed with secrets key {kid}, which is not configured "
                                    f"(configured: {', '.join(self.ids)})", [kid])
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            return aead.decrypt(raw[:_NONCE], raw[_NONCE:], context).decode("utf-8", "surrogatepass")
        except (InvalidTag, ValueError, binascii.Error):
            raise SealedSecretError(f"a value sealed with secrets key {kid} does not authenticate "
                                    "(altered, or sealed for another record)", [kid]) from None


def _seal_value(value: str, keyring: Keyring, context: bytes) -> str:
    return value if _NO_SECRET.fullmatch(value) else keyring.seal(value, context)


def seal_source(text: str, keyring: Keyring, context: bytes) -> str:
    """``text`` (a URI or DSN) with every inline secret replaced by a sealed reference.

    The same spans :func:`~leibrix.domain._tokens.redact_source` hides are sealed;
    ``unseal_source(seal_source(t, k, c), k, c) == t``. A string without an
    inline secret is returned unchanged.

    Examples
    --------
    >>> k = Keyring([bytes(32)])
    >>> s = seal_source("postgresql://app:hunter2@db/x", k, b"t/d")
    >>> s.startswith("postgresql://app:${sealed:") and "hunter2" not in s
    True
    >>> unseal_source(s, k, b"t/d")
    'postgresql://app:hunter2@db/x'
    >>> seal_source("postgresql://app:${env:PG_PW}@db/x", k, b"t/d")
    'postgresql://app:${env:PG_PW}@db/x'
    """
    out = _USERINFO.sub(lambda m: f"{m.group('head')}:{_seal_value(m.group('pw'), keyring, context)}@", text)
    m = _GO_DSN.match(out)
    if m:
        out = f"{m.group('user')}:{_seal_value(m.group('pw'), keyring, context)}@{m.group('rest')}"
    return _PARAM.sub(lambda m: m.group("k") + _seal_value(m.group("v"), keyring, context), out)


def unseal_source(text: str, keyring: Keyring | None, context: bytes) -> str:
    """``text`` with every sealed reference replaced by its plaintext.

    Raises
    ------
    SealedSecretError
        A reference's key is not in ``keyring`` (or there is no keyring), or it
        does not authenticate for ``context``.
    """
    if "${sealed:" not in text:
        return text
    if keyring is None:
        ids = sealed_key_ids(text)
        raise SealedSecretError(f"sealed with secrets key {', '.join(sorted(ids))}, and no secrets key is "
                                "configured (--secrets-key-file)", ids)
    return _SEALED.sub(lambda m: keyring.unseal(m.group(1), m.group(2), context), text)


def sealed_key_ids(text: str) -> set[str]:
    """Ids of the keys that sealed the references in ``text`` (empty: nothing sealed)."""
    return {m.group(1) for m in _SEALED.finditer(text)}


def is_sealed(text: str) -> bool:
    """Whether ``text`` holds a sealed reference."""
    return _SEALED.search(text) is not None
