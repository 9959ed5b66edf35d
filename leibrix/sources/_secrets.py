"""Credentials by reference: ``${env:NAME}`` and ``${file:/path}`` inside a source URI.

A URI stored in a dataset record, logged, or echoed in an error must not carry
a password. So a client may write ``postgresql://app:${env:PG_PASSWORD}@db/x``
or ``jdbc:mysql://db:3306/x?user=app&password=${file:/run/secrets/pw}``; the
reference is kept as written everywhere and resolved by :func:`resolve` only
at the moment a connection is made. ``${file:...}`` reads the whole file and
strips one trailing newline (how secret files are usually written).

:func:`redact` is what error messages and reprs show instead of a URI: the
password of ``scheme://user:password@host`` and the value of any
``password``/``secret``/``token``/``key`` parameter are replaced by ``***``,
references included, so neither a secret nor where it lives leaks.
"""

from __future__ import annotations

import os
import re

from leibrix.domain._errors import FailedPrecondition

__all__ = ["redact", "resolve", "scrub", "secrets_in"]

_REF = re.compile(r"\$\{(env|file):([^}]*)\}")
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-:]*://[^/@:]*):(?P<pw>[^@/]*)@")
_GO_DSN = re.compile(r"^(?P<user>[^:@/]*):(?P<pw>[^@]*)@(?P<rest>(tcp|unix)\(.*)$")
_PARAM = re.compile(r"(?i)(?P<k>[?&;#](?:[a-z_.]*)(?:password|passwd|secret|token|credential|key)[a-z_.]*=)(?P<v>[^&;#]*)")


def resolve(text: str, field: str) -> str:
    """``text`` with every ``${env:NAME}`` / ``${file:/path}`` replaced by its value.

    Parameters
    ----------
    text:
        A URI or DSN, as the request carries it.
    field:
        The request field it came from, named in errors.

    Raises
    ------
    FailedPrecondition
        A referenced variable is unset or a file cannot be read. The message
        names the reference (``env:NAME``), never a value.
    """

    def value(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        if kind == "env":
            if name not in os.environ:
                raise FailedPrecondition(f"{field}: environment variable {name!r} referenced by the URI is not set")
            return os.environ[name]
        try:
            with open(name, encoding="utf-8") as f:
                data = f.read()
        except OSError as exc:
            raise FailedPrecondition(f"{field}: secret file {name!r} cannot be read ({exc.strerror})") from None
        return data[:-1] if data.endswith("\n") else data

    return _REF.sub(value, text)


def redact(text: str) -> str:
    """``text`` with passwords and secret-looking parameters replaced by ``***`` (safe to log or return)."""
    out = _USERINFO.sub(lambda m: f"{m.group('head')}:***@", text)
    m = _GO_DSN.match(out)
    if m:
        out = f"{m.group('user')}:***@{m.group('rest')}"
    return _PARAM.sub(lambda m: m.group("k") + "***", out)


def scrub(message: str, *secrets: str) -> str:
    """``message`` with every non-empty ``secret`` (and any resolved form of it) removed."""
    for s in secrets:
        if s and len(s) >= 3:
            message = message.replace(s, "***")
    return message


def secrets_in(text: str) -> list[str]:
    """The resolved values of ``text``'s references (for :func:`scrub`); unresolvable ones are skipped."""
    out = []
    for m in _REF.finditer(text):
        try:
            out.append(resolve(m.group(0), ""))
        except FailedPrecondition:
            pass
    return out
