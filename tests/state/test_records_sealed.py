"""Dataset records with sealed credentials: what is sealed, rotation, and a model without the key."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio

from leibrix.domain._sealing import Keyring, SealedSecretError, key_id, parse_key, seal_source, unseal_source
from leibrix.domain._tokens import redact_source
from leibrix.state import _records
from leibrix.state._model import ClusterState
from leibrix.store._store import Keys, Mirror
from leibrix.wire._proto import leibrix_cp as cp

PW = "hunter2-" + os.urandom(4).hex()
OLD, NEW = os.urandom(32), os.urandom(32)


@pytest.mark.parametrize("uri", [
    f"jdbc:postgresql://db:5432/x?user=app&password={PW}&ssl=1",
    f"postgresql://app:{PW}@db:5432/x?sslpassword={PW}",
    f"app:{PW}@tcp(sr:9030)/x",
    f"host=db user=app password={PW} dbname=x",
    f"http://rest:8181/v1?token={PW}",
])
def test_every_inline_secret_is_sealed_and_comes_back_exactly(uri: str) -> None:
    ring = Keyring([NEW])
    sealed = seal_source(uri, ring, b"acme/ev")
    assert PW not in sealed and f"${{sealed:{key_id(NEW)}:" in sealed
    assert redact_source(sealed) == redact_source(uri)  # the readable rest is untouched
    assert unseal_source(sealed, ring, b"acme/ev") == uri
    # bound to its record: the same ciphertext does not open for another tenant's dataset
    with pytest.raises(SealedSecretError, match="does not authenticate"):
        unseal_source(sealed, ring, b"evil/ev")


def test_references_and_uris_without_a_secret_are_not_sealed() -> None:
    ring = Keyring([NEW])
    for uri in ("postgresql://app:${env:PG_PW}@db/x", "jdbc:mysql://db/x?user=app&password=${file:/run/pw}",
                "sqlite:////tmp/x.db", "mysql://root@db:9030/x"):
        assert seal_source(uri, ring, b"t/d") == uri
    once = seal_source(f"postgresql://app:{PW}@db/x", ring, b"t/d")
    assert seal_source(once, ring, b"t/d") == once  # never sealed twice


def test_key_files_take_raw_hex_and_base64_and_refuse_anything_else() -> None:
    import base64

    assert parse_key(NEW) == parse_key(NEW.hex().encode() + b"\n") == parse_key(base64.b64encode(NEW)) == NEW
    with pytest.raises(ValueError, match="not a 256-bit key"):
        parse_key(b"short")


def _record(uri: str, *, keyring: Keyring | None, dataset: str = "ev") -> bytes:
    req = cp.AdmitDatasetRequest(tenant_id="acme", dataset_id=dataset, source=cp.DataSource(
        catalog=cp.Catalog(jdbc=cp.JdbcCatalog(uri=uri)), database="public", table="ev"))
    _records.use_keyring(keyring)
    try:
        return _records.encode_dataset(bytes(req), 1, 1, 1000, "v1")
    finally:
        _records.use_keyring(None)


def _decode(raw: bytes, keyring: Keyring | None) -> _records.Dataset:
    _records.use_keyring(keyring)
    try:
        return _records.decode_dataset(raw)
    finally:
        _records.use_keyring(None)


def test_rotation_the_first_key_seals_every_key_unseals_and_a_rewrite_moves_to_the_new_key() -> None:
    uri = f"jdbc:postgresql://db/x?user=app&password={PW}"
    by_old = _record(uri, keyring=Keyring([OLD]))
    assert PW.encode() not in by_old
    rotated = Keyring([NEW, OLD])
    ds = _decode(by_old, rotated)
    assert ds.request.source.catalog.jdbc.uri == uri and ds.sealed_with == {key_id(OLD)} and not ds.secrets_error
    # the next write of the record (from the model's request) seals with the new first key
    rewritten = _record(ds.request.source.catalog.jdbc.uri, keyring=rotated)
    again = _decode(rewritten, Keyring([NEW]))
    assert again.sealed_with == {key_id(NEW)} and again.request.source.catalog.jdbc.uri == uri
    # the same request fingerprint as admitted: idempotent retries still match
    assert again.fingerprint() == _decode(_record(uri, keyring=None), None).fingerprint()


def test_without_the_key_a_record_decodes_sealed_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    raw = _record(f"jdbc:postgresql://db/x?user=app&password={PW}", keyring=Keyring([OLD]))
    for ring, why in ((None, "no secrets key is configured"), (Keyring([NEW]), f"{key_id(OLD)}, which is not configured")):
        ds = _decode(raw, ring)
        assert why in ds.secrets_error and ds.sealed_with == {key_id(OLD)}
        assert "${sealed:" in ds.request.source.catalog.jdbc.uri and PW not in ds.request.source.catalog.jdbc.uri
    assert any("cannot be unsealed" in r.getMessage() and "acme/ev" in r.getMessage() for r in caplog.records)
    assert not any(PW in r.getMessage() for r in caplog.records)


async def test_a_mirror_without_the_key_keeps_the_dataset_flagged(etcd: Any) -> None:
    """A master lacking the key still holds the dataset (budgets, routes and listings stay right), flagged."""
    keys = Keys("sealed")
    raw = _record(f"jdbc:postgresql://db/x?user=app&password={PW}", keyring=Keyring([OLD]))
    await etcd.put(keys.dataset("acme", "ev"), raw)
    await etcd.put(keys.dataset("acme", "plain"), _record("sqlite:////tmp/x.db", keyring=Keyring([OLD]), dataset="plain"))
    mirror = Mirror(etcd, keys)
    state = ClusterState()
    state.attach(mirror)
    async with trio.open_nursery() as nursery:
        await nursery.start(mirror.run)
        ds = state.datasets[("acme", "ev")]
        assert "no secrets key is configured" in ds.secrets_error and ds.sealed_with == {key_id(OLD)}
        plain = state.datasets[("acme", "plain")]
        assert not plain.sealed_with and not plain.secrets_error  # nothing to seal in it
        assert state.usage("acme").datasets == 2
        nursery.cancel_scope.cancel()
