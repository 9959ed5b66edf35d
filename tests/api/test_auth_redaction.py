"""Source credentials never leave the master: what DatasetInfo shows of catalog URIs and DSNs."""

from __future__ import annotations

import pytest

from leibrix.api._datasets import _redacted
from leibrix.domain._tokens import redact_source
from leibrix.wire._proto import leibrix_cp as cp


@pytest.mark.parametrize(("given", "shown"), [
    ("postgresql://app:hunter2@db:5432/x?sslpassword=p2", "postgresql://app:***@db:5432/x?sslpassword=***"),
    ("postgresql://app:pa/ss@db/x", "postgresql://app:***@db/x"),
    ("jdbc:mysql://db:3306/x?user=app&password=s3cret&ssl=1", "jdbc:mysql://db:3306/x?user=app&password=***&ssl=1"),
    ("app:s3cret@tcp(db:9030)/x", "app:***@tcp(db:9030)/x"),
    ("host=db user=app password=s3cret dbname=x", "host=db user=app password=*** dbname=x"),
    ("http://rest:8181/v1?token=abc", "http://rest:8181/v1?token=***"),
    # references name where a secret lives, not the secret: they are shown as written
    ("postgresql://app:${env:PG_PW}@db/x", "postgresql://app:${env:PG_PW}@db/x"),
    ("jdbc:mysql://db/x?user=app&password=${file:/run/secrets/pw}",
     "jdbc:mysql://db/x?user=app&password=${file:/run/secrets/pw}"),
    ("mysql://root@db:9030/x", "mysql://root@db:9030/x"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_passwords_are_replaced_and_references_kept(given: str, shown: str) -> None:
    assert redact_source(given) == shown


@pytest.mark.parametrize("catalog", [
    cp.Catalog(jdbc=cp.JdbcCatalog(uri="postgresql://app:hunter2@db/x", driver="postgresql")),
    cp.Catalog(starrocks=cp.StarRocksCatalog(dsn="root:hunter2@tcp(sr:9030)/x")),
    cp.Catalog(iceberg=cp.IcebergCatalog(uri="http://admin:hunter2@rest:8181")),
])
def test_every_catalog_kind_is_redacted_in_dataset_info(catalog: cp.Catalog) -> None:
    source = cp.DataSource(catalog=catalog, database="db", table="t")
    shown = _redacted(cp.DataSource().parse(bytes(source)))
    assert b"hunter2" in bytes(source) and b"hunter2" not in bytes(shown)
    assert shown.database == "db" and shown.table == "t"
