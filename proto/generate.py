"""Regenerate (or check) the Python code generated from ``proto/leibrix_cp/*.proto``.

Two generators run over the same files:

* betterproto 2.0.0b7 -> ``leibrix/wire/_proto/leibrix_cp/__init__.py``: the gRPC
  surface (messages, grpclib stubs and service bases);
* protoc's own Python generator -> ``leibrix/wire/_proto/records/*_pb2.py``: upb-backed
  messages used for etcd values (parsing is ~100x faster than betterproto) and,
  because importing them registers the file descriptors, for server reflection.

Usage::

    python proto/generate.py          # rewrite the committed code
    python proto/generate.py --check  # exit 1 if the committed code is stale

Needs the ``proto`` extra (``betterproto[compiler]``, ``grpcio-tools``).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT = ROOT / "leibrix" / "wire" / "_proto"
GENERATED = ("leibrix_cp", "records")


def _protoc(*args: str) -> None:
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    sources = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "leibrix_cp").glob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTO_DIR), *args, *sources],
        cwd=PROTO_DIR,
        env=env,
        check=True,
    )


def generate(dest: Path) -> None:
    """Write both generated trees under ``dest`` (``leibrix_cp/`` and ``records/``)."""
    with tempfile.TemporaryDirectory() as tmp:
        bp, pb = Path(tmp, "bp"), Path(tmp, "pb")
        bp.mkdir()
        pb.mkdir()
        _protoc(f"--python_betterproto_out={bp}")
        _protoc(f"--python_out={pb}", f"--pyi_out={pb}")
        shutil.copytree(bp / "leibrix_cp", dest / "leibrix_cp")
        records = dest / "records"
        records.mkdir()
        (records / "__init__.py").write_text(
            '"""protoc-generated (upb) messages of proto/leibrix_cp; see proto/generate.py."""\n'
        )
        for src in sorted((pb / "leibrix_cp").iterdir()):
            text = src.read_text().replace("from leibrix_cp import", "from leibrix.wire._proto.records import")
            (records / src.name).write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if not args.check:
        for name in GENERATED:
            shutil.rmtree(OUT / name, ignore_errors=True)
        generate(OUT)
        print(f"regenerated {', '.join(GENERATED)} under {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for name in GENERATED:
            cmp = filecmp.dircmp(Path(tmp, name), OUT / name, ignore=["__pycache__"])
            stale += cmp.diff_files + cmp.left_only + cmp.right_only
        if stale:
            print(f"generated code is stale ({', '.join(sorted(stale))}); run `make proto`", file=sys.stderr)
            return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
