"""The configuration reference in docs/operations.md is generated from the options table and kept current."""

from __future__ import annotations

from pathlib import Path

import pytest

from leibrix.master._options import OPTIONS, Option
from leibrix.master._reference import BEGIN, END, StaleReference, check, main, render_options, splice

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_committed_reference_is_current() -> None:
    """Fails when an option was added or changed without `make docs`."""
    check(OPERATIONS)
    assert main(["--check", str(OPERATIONS)]) == 0


def test_every_option_has_one_row_with_flag_env_key_and_default() -> None:
    rows = render_options().splitlines()[2:]
    assert len(rows) == len(OPTIONS)
    for opt, row in zip(OPTIONS, rows, strict=True):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[0].startswith(f"`{opt.flag}") and cells[1] == f"`{opt.env}`" and cells[2] == f"`{opt.name}`"
        assert cells[3]


def test_cells_are_escaped_and_defaults_readable() -> None:
    table = render_options([
        Option("odd", str, "", "a | b <key>\n  wrapped", "X"),
        Option("size", int, 8 << 30, "bytes", "BYTES"),
        Option("flag_on", bool, False, "switch"),
        Option("hosts", list, ["a:1", "b:2"], "hosts", "URLS"),
    ])
    assert "a \\| b &lt;key> wrapped" in table
    assert "`8589934592` (8 GiB)" in table and "| (none) |" in table
    assert "| `--flag-on` | `LEIBRIX_FLAG_ON` | `flag_on` | `false` |" in table and "`a:1,b:2`" in table


def test_splice_replaces_only_the_block(tmp_path: Path) -> None:
    doc = tmp_path / "ops.md"
    doc.write_text(f"# Ops\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n", encoding="utf-8")
    with pytest.raises(StaleReference, match="make docs"):
        check(doc)
    assert main(["--check", str(doc)]) == 1
    assert main(["--write", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Ops\n\nbefore\n\n" + BEGIN) and text.endswith(END + "\n\nafter\n")
    assert render_options() in text and "old table" not in text
    check(doc)
    assert splice(text) == text


@pytest.mark.parametrize("text", ["no markers", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"])
def test_missing_or_repeated_markers_are_errors(text: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="marker"):
        splice(text)
    doc = tmp_path / "bad.md"
    doc.write_text(text, encoding="utf-8")
    assert main(["--check", str(doc)]) == 2
