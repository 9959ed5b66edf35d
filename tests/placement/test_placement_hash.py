"""XXH64 hashing: reference vectors, compiled == twin, stability across processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leibrix.placement import hash64, hash_keys

KEYS = st.one_of(st.binary(max_size=100), st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))


@pytest.mark.parametrize(
    ("data", "seed", "expected"),
    [  # published XXH64 vectors (xxHash README / sanity checks)
        (b"", 0, 0xEF46DB3751D8E999),
        (b"a", 0, 0xD24EC4F1A98C6E5B),
        (b"abc", 0, 0x44BC2CF5AD770999),
    ],
)
@pytest.mark.parametrize("backend", ["native", "twin"])
def test_reference_vectors(data: bytes, seed: int, expected: int, backend: str) -> None:
    assert hash64(data, seed, backend=backend) == expected


@settings(max_examples=300, deadline=None)
@given(key=KEYS, seed=st.integers(0, 2**64 - 1))
def test_native_equals_twin(key, seed) -> None:
    assert hash64(key, seed) == hash64(key, seed, backend="twin")


@settings(max_examples=50, deadline=None)
@given(keys=st.lists(KEYS, max_size=40))
def test_batch_equals_single(keys) -> None:
    got = hash_keys(keys)
    assert got.dtype == np.uint64 and got.shape == (len(keys),)
    assert [int(h) for h in got] == [hash64(k) for k in keys]
    assert (hash_keys(keys, backend="twin") == got).all()


def test_str_is_hashed_as_utf8() -> None:
    assert hash64("zürich/ventes/2026") == hash64("zürich/ventes/2026".encode())


def test_stable_across_processes() -> None:
    """Python's own hash is salted per process; ours must not be."""
    code = "from leibrix.placement import hash64; print(hash64('tenant/ds/epoch'))"
    outs = {
        subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}, check=True,
                       capture_output=True, text=True).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {str(hash64("tenant/ds/epoch"))}


def test_bad_keys_are_named() -> None:
    with pytest.raises(TypeError, match=r"keys\[1\] must be str or bytes, got int"):
        hash_keys(["a", 3])
    with pytest.raises(TypeError, match="key must be str or bytes"):
        hash64(3.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be"):
        hash64("a", -1)
    with pytest.raises(TypeError, match="not a single str"):
        hash_keys("abc")
