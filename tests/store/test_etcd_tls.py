"""etcd over TLS: real etcd members started with client and peer TLS (certificates required), masters on them.

Certificates are minted here (:mod:`tests.support.certs`); the members are
real ``etcd`` processes run by :func:`leibrix.store._member.run_member`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from leibrix.store._ports import free_hostport, free_port_url
from leibrix.master._config import ConfigError, MasterConfig, load_config
from leibrix.master._master import Master
from leibrix.store._etcd import EtcdClient, EtcdTls, EtcdUnavailable
from leibrix.store._member import TEST_TIMINGS, MemberTls
from tests.support.certs import Ca
from tests.support.cluster import leading, start_master
from tests.support.etcd import EtcdServer, member_config


def _https() -> str:
    return free_port_url().replace("http://", "https://")


async def _tls_member(nursery: trio.Nursery, tmp_path: Path, ca: Ca) -> EtcdServer:
    leaf = ca.issue("member", cn="m0", dns=("localhost",))
    cfg = member_config(tmp_path / "etcd", client_url=_https(), peer_url=_https(),
                        tls=MemberTls(leaf.cert, leaf.key, ca.pem))
    server = EtcdServer(cfg, nursery)
    await server.start()
    return server


async def _refused(endpoint: str, tls: EtcdTls | None) -> None:
    with trio.fail_after(10), pytest.raises(EtcdUnavailable):
        client = await EtcdClient.connect([endpoint], timeout=1.0, tls=tls)
        await client.aclose()


async def test_an_etcd_requiring_client_certificates_serves_them_and_refuses_the_rest(nursery, tmp_path) -> None:
    ca, stranger = Ca(tmp_path / "ca", "ca"), Ca(tmp_path / "stranger", "stranger")
    server = await _tls_member(nursery, tmp_path, ca)
    url = server.client_url
    assert url.startswith("https://")
    client_cert = ca.issue("client", cn="client")
    foreign = stranger.issue("foreign", cn="client")
    tls = EtcdTls(ca.pem, client_cert.cert, client_cert.key)

    client = await EtcdClient.connect([url], tls=tls, timeout=5.0)
    try:
        revision = await client.put("/tls/a", b"1")
        async with client.watch_prefix("/tls/", start_revision=revision) as stream:
            await client.put("/tls/b", b"2")
            seen: list[str] = []
            with trio.fail_after(5):
                while len(seen) < 2:
                    seen += [e.kv.key for e in await stream.receive()]
        assert seen == ["/tls/a", "/tls/b"]
        assert (await client.get("/tls/b")).value == b"2"
        # a bare host:port with TLS options is dialled over TLS too
        bare = await EtcdClient.connect([url.removeprefix("https://")], tls=tls, timeout=5.0)
        assert (await bare.get("/tls/a")).value == b"1"
        await bare.aclose()
    finally:
        await client.aclose()

    await _refused(url, EtcdTls(ca.pem))  # no client certificate
    await _refused(url, EtcdTls(ca.pem, foreign.cert, foreign.key))  # a certificate from another CA
    await _refused(url, EtcdTls(stranger.pem, client_cert.cert, client_cert.key))  # the member is not trusted
    await _refused(url.replace("https://", ""), None)  # plain text to the TLS port
    with pytest.raises(ValueError, match="http:// endpoint with TLS"):
        await EtcdClient.connect([url.replace("https://", "http://")], tls=tls)


async def test_a_master_dials_an_external_tls_etcd_through_its_options(nursery, tmp_path) -> None:
    ca = Ca(tmp_path / "ca", "ca")
    server = await _tls_member(nursery, tmp_path, ca)
    leaf = ca.issue("master-client", cn="m1")
    master = await leading(await start_master(nursery, server.client_url, etcd_ca=ca.pem, etcd_cert=leaf.cert,
                                              etcd_key=leaf.key))
    assert master.etcd is not None and (await master.etcd.status()).leader_id != 0
    # without the client certificate the same master configuration cannot reach etcd at all
    with pytest.raises(BaseException) as refused:  # noqa: PT011 - the leaf is checked below
        with trio.fail_after(15):
            await start_master(nursery, server.client_url, "m2", etcd_ca=ca.pem)
    leaf_error = refused.value
    while isinstance(leaf_error, BaseExceptionGroup) and len(leaf_error.exceptions) == 1:
        leaf_error = leaf_error.exceptions[0]
    assert isinstance(leaf_error, EtcdUnavailable), repr(leaf_error)


async def test_a_master_on_an_embedded_tls_member_starts_and_leads(nursery, tmp_path) -> None:
    ca = Ca(tmp_path / "ca", "ca")
    leaf = ca.issue("member", cn="m1", dns=("localhost",))
    client_url, peer_url = _https(), _https()
    config = MasterConfig(name="m1", cluster="tls", grpc_listen=free_hostport(), http_listen=free_hostport(),
                          data_dir=tmp_path / "m1", etcd_client_url=client_url, etcd_peer_url=peer_url,
                          etcd_heartbeat_ms=TEST_TIMINGS.heartbeat_ms, etcd_election_ms=TEST_TIMINGS.election_ms,
                          etcd_member_cert=leaf.cert, etcd_member_key=leaf.key, etcd_member_ca=ca.pem,
                          lease_ttl=1).validate()
    member = config.member_config()
    assert "--client-cert-auth" in member.command("etcd") and "--peer-client-cert-auth" in member.command("etcd")
    master = Master(config)
    await nursery.start(master.run)
    await leading(master)
    assert master.member_state.pid is not None
    # the member it runs serves TLS only and wants a certificate
    await _refused(client_url, EtcdTls(ca.pem))
    await _refused(client_url.removeprefix("https://"), None)


def test_etcd_tls_options_are_checked_together(tmp_path) -> None:
    ca = Ca(tmp_path / "ca", "ca")
    leaf = ca.issue("member", cn="m1")
    with pytest.raises(ConfigError, match="give all three or none"):
        load_config({"etcd_member_cert": leaf.cert, "etcd_member_key": leaf.key}, environ={})
    with pytest.raises(ConfigError, match="must be https://"):
        load_config({"etcd_member_cert": leaf.cert, "etcd_member_key": leaf.key, "etcd_member_ca": ca.pem},
                    environ={})
    with pytest.raises(ConfigError, match="--etcd-client-url.*beyond loopback without TLS.*--insecure"):
        load_config({"etcd_client_url": "http://0.0.0.0:2379"}, environ={})
    assert load_config({"etcd_client_url": "http://0.0.0.0:2379", "insecure": True}, environ={}).insecure
    with pytest.raises(ConfigError, match="plain http:// but --etcd-ca"):
        load_config({"etcd_endpoints": "http://10.0.0.1:2379", "etcd_ca": ca.pem}, environ={})
    with pytest.raises(ConfigError, match="no embedded member runs"):
        load_config({"etcd_endpoints": "10.0.0.1:2379", "etcd_member_cert": leaf.cert, "etcd_member_key": leaf.key,
                     "etcd_member_ca": ca.pem}, environ={})
    external = load_config({"etcd_endpoints": "10.0.0.1:2379", "etcd_ca": ca.pem, "etcd_cert": leaf.cert,
                            "etcd_key": leaf.key}, environ={})
    assert external.etcd_tls == EtcdTls(ca.pem, leaf.cert, leaf.key)
    embedded = load_config({"etcd_client_url": "https://127.0.0.1:2379", "etcd_peer_url": "https://127.0.0.1:2380",
                            "etcd_member_cert": leaf.cert, "etcd_member_key": leaf.key, "etcd_member_ca": ca.pem},
                           environ={})
    assert embedded.etcd_tls == EtcdTls(ca.pem, leaf.cert, leaf.key), "the member's own files dial it"
    assert load_config({}, environ={}).etcd_tls is None
