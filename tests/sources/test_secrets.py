"""Secret references: resolved only on demand, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from leibrix.domain._errors import FailedPrecondition
from leibrix.sources._secrets import redact, resolve, scrub


def test_resolve_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEIBRIX_T_PW", "s3cr3t")
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    assert resolve(f"a=${{env:LEIBRIX_T_PW}}&b=${{file:{f}}}", "x") == "a=s3cr3t&b=from-file"
    with pytest.raises(FailedPrecondition, match=r"^source\.x: environment variable 'LEIBRIX_T_NONE'"):
        resolve("${env:LEIBRIX_T_NONE}", "source.x")
    with pytest.raises(FailedPrecondition, match="secret file"):
        resolve(f"${{file:{tmp_path / 'missing'}}}", "source.x")


def test_redact_hides_passwords_and_references() -> None:
    assert redact("postgresql://u:hunter2@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("jdbc:mysql://h/db?user=u&password=hunter2&x=1") == "jdbc:mysql://h/db?user=u&password=***&x=1"
    assert redact("u:${env:PW}@tcp(h:9030)/db") == "u:***@tcp(h:9030)/db"
    assert redact("https://rest/api#token=abc&warehouse=w") == "https://rest/api#token=***&warehouse=w"
    assert scrub("failed for hunter2 at h", "hunter2") == "failed for *** at h"
