"""MasterConfig: precedence (flag > env > TOML > default), validation messages, --help coverage."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from leibrix.master._config import ConfigError, MasterConfig, add_arguments, load_config
from leibrix.master._options import OPTIONS
from leibrix.store._member import EMBEDDED_TXN_LIMITS, MEMBER_HEADROOM
from leibrix.store._writer import TxnLimits
from leibrix.wire._address import split_hostport


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_listen_on_loopback_only() -> None:
    config = load_config(parse(), environ={})
    for addr in (config.grpc_listen, config.http_listen):
        assert split_hostport(addr, what="x")[0] == "127.0.0.1"
    assert config.etcd_client_url.startswith("http://127.0.0.1:")
    assert config.etcd_peer_url.startswith("http://127.0.0.1:")
    assert config.embedded and config.endpoints == [config.etcd_client_url]
    assert config.advertise == config.grpc_listen and config.prefix == "/leibrix/default/"
    assert config.sources == {}


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    toml = tmp_path / "master.toml"
    toml.write_text('[master]\nlease_ttl = 7\ncluster = "from-file"\nhttp-listen = "127.0.0.1:9001"\nname = "file"\n')
    env = {"LEIBRIX_CONFIG": str(toml), "LEIBRIX_LEASE_TTL": "5", "LEIBRIX_NAME": "env"}
    config = load_config(parse("--name", "flag"), environ=env)
    assert config.name == "flag" and config.sources["name"] == "flag"
    assert config.lease_ttl == 5 and config.sources["lease_ttl"] == "env LEIBRIX_LEASE_TTL"
    assert config.cluster == "from-file" and config.http_listen == "127.0.0.1:9001"
    assert config.sources["cluster"] == f"file {toml}"
    assert config.shutdown_timeout == MasterConfig().shutdown_timeout  # untouched: default


def test_config_flag_beats_config_env(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('cluster = "a"\n')
    (tmp_path / "b.toml").write_text('cluster = "b"\n')
    config = load_config(parse("--config", str(tmp_path / "a.toml")), environ={"LEIBRIX_CONFIG": str(tmp_path / "b.toml")})
    assert config.cluster == "a"


def test_env_lists_and_booleans_are_parsed() -> None:
    env = {"LEIBRIX_ETCD_ENDPOINTS": "10.0.0.1:2379, 10.0.0.2:2379", "LEIBRIX_ALLOW_UNSAFE_ETCD": "yes"}
    config = load_config(parse(), environ=env)
    assert config.etcd_endpoints == ["10.0.0.1:2379", "10.0.0.2:2379"]
    assert not config.embedded and config.endpoints == config.etcd_endpoints
    assert config.allow_unsafe_etcd is True
    assert load_config(parse("--allow-unsafe-etcd"), environ={}).allow_unsafe_etcd is True


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--lease-ttl", "0"], {}, "--lease-ttl (flag): 0 is outside 1-60 seconds"),
        (["--lease-ttl", "soon"], {}, "--lease-ttl (flag): 'soon' is not a valid int"),
        ([], {"LEIBRIX_LEASE_TTL": "1.5"}, "--lease-ttl (env LEIBRIX_LEASE_TTL): '1.5' is not a valid int"),
        ([], {"LEIBRIX_ALLOW_UNSAFE_ETCD": "maybe"}, "'maybe' is not a boolean"),
        (["--grpc-listen", "localhost"], {}, "--grpc-listen (flag): 'localhost' is not host:port"),
        (["--http-listen", "127.0.0.1:70000"], {}, "--http-listen (flag): port 70000 is outside 1-65535"),
        (["--name", "a/b"], {}, "--name (flag): 'a/b' may only use"),
        (["--cluster", ""], {}, "--cluster (flag): '' may only use"),
        (["--log-level", "loud"], {}, "--log-level (flag): 'loud' is not one of"),
        ([], {"LEIBRIX_LOG_FORMAT": "xml"}, "--log-format (env LEIBRIX_LOG_FORMAT): 'xml' is not one of text, json"),
        (["--etcd-endpoints", "ftp://x:1"], {}, "expected http://host:port"),
        (["--etcd-heartbeat-ms", "100", "--etcd-election-ms", "200"], {}, "must be >= 5 x heartbeat_ms"),
        (["--initial-cluster", "a=http://127.0.0.1:1"], {}, "does not name this member 'default'"),
        (["--etcd-peer-url", "http://127.0.0.1:2380/path"], {}, "must not have a path"),
        (["--shutdown-timeout", "0"], {}, "--shutdown-timeout (flag): 0.0 is outside (0, 60] seconds"),
        (["--worker-max-registering", "0"], {}, "--worker-max-registering (flag): 0 must be > 0"),
        (["--worker-dead-timeout", "2"], {}, "--worker-dead-timeout (flag): 2.0 must exceed --worker-heartbeat-interval"),
        ([], {"LEIBRIX_RESIDENCY_HYSTERESIS": "0.5"}, "--residency-hysteresis (env LEIBRIX_RESIDENCY_HYSTERESIS): 0.5 must be >= 1"),
        (["--default-replication", "17"], {}, "--default-replication (flag): 17 is outside 1-16"),
        (["--heat-half-life-s", "-1"], {}, "--heat-half-life-s (flag): -1.0 must be > 0"),
        (["--etcd-max-txn-ops", "1"], {}, "--etcd-max-txn-ops (flag): max_ops must be >= 2"),
        (["--etcd-max-txn-ops", "-5"], {}, "--etcd-max-txn-ops (flag): -5 must be >= 0"),
        ([], {"LEIBRIX_ETCD_MAX_REQUEST_BYTES": "100"}, "--etcd-max-request-bytes (env LEIBRIX_ETCD_MAX_REQUEST_BYTES)"),
    ],
)
def test_invalid_values_name_the_option_and_source(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(parse(*argv), environ=env)
    assert message in str(info.value)


def test_worker_and_admission_options_reach_the_hub_and_admission(tmp_path: Path) -> None:
    """The hub and admission get these options from the composition root; their defaults are the options'."""
    from leibrix.master._compose import admission_configs, hub_config
    from leibrix.control._admission import AdmissionConfig
    from leibrix.control._settings import CoordinatorConfig
    from leibrix.workers._hub import HubConfig

    default = MasterConfig()
    hub = hub_config(default)
    assert HubConfig() == hub and hub.heartbeat_interval == default.worker_heartbeat_interval
    admission, coord = admission_configs(default)
    assert (admission, coord) == (AdmissionConfig(), CoordinatorConfig())  # the options' defaults are theirs
    toml = tmp_path / "m.toml"
    toml.write_text("worker_missed_heartbeats = 5\nheat-half-life-s = 60\n")
    config = load_config(
        parse("--config", str(toml), "--worker-heartbeat-interval", "0.5", "--default-replication", "3"),
        environ={"LEIBRIX_MAX_EPOCHS_PER_REQUEST": "12", "LEIBRIX_WORKER_DEFAULT_MEMORY_BYTES": str(1 << 30)},
    )
    hub = hub_config(config)
    assert (hub.heartbeat_interval, hub.missed_heartbeats, hub.default_memory_bytes) == (0.5, 5, 1 << 30)
    admission, coord = admission_configs(config)
    assert admission.limits.max_epochs_per_request == 12
    assert coord.default_replication == 3 and coord.heat.half_life_s == 60.0
    assert coord.hysteresis == default.residency_hysteresis


def test_bad_toml_files_are_explained(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("lease_ttl = = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(parse("--config", str(bad)), environ={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("leese_ttl = 3\n")
    with pytest.raises(ConfigError, match="unknown option 'leese_ttl'"):
        load_config(parse("--config", str(unknown)), environ={})
    typed = tmp_path / "typed.toml"
    typed.write_text('lease_ttl = "3"\n')
    with pytest.raises(ConfigError, match=r"--lease-ttl \(file .*typed.toml\): '3' is not a valid int"):
        load_config(parse("--config", str(typed)), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(parse("--config", str(tmp_path / "missing.toml")), environ={})


def test_initial_cluster_builds_the_member_config(tmp_path: Path) -> None:
    config = load_config(
        parse(
            "--name", "m2", "--data-dir", str(tmp_path),
            "--etcd-peer-url", "http://127.0.0.1:2390",
            "--initial-cluster", "m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2390,m3=http://127.0.0.1:2400",
        ),
        environ={},
    )
    member = config.member_config()
    assert list(member.initial_cluster) == ["m1", "m2", "m3"]
    assert member.data_dir == tmp_path / "etcd" and member.name == "m2"
    assert member.timings.heartbeat_ms == config.etcd_heartbeat_ms


def test_one_setting_sizes_the_writer_and_the_embedded_member() -> None:
    external = load_config(parse("--etcd-endpoints", "10.0.0.1:2379"), environ={})
    assert external.txn_limits == TxnLimits()  # etcd's own defaults: 128 ops, 1.5 MiB
    assert (TxnLimits().max_ops, TxnLimits().max_request_bytes) == (128, 1536 * 1024)
    embedded = load_config(parse(), environ={})
    assert embedded.txn_limits == EMBEDDED_TXN_LIMITS
    member = embedded.member_config()
    assert member.max_txn_ops == EMBEDDED_TXN_LIMITS.max_ops * MEMBER_HEADROOM
    tuned = load_config(parse("--etcd-max-txn-ops", "500"), environ={"LEIBRIX_ETCD_MAX_REQUEST_BYTES": "2000000"})
    assert tuned.txn_limits == TxnLimits(500, 2_000_000)
    assert f"--max-txn-ops={500 * MEMBER_HEADROOM}" in tuned.member_config().command("etcd")
    assert f"--max-request-bytes={2_000_000 * MEMBER_HEADROOM}" in tuned.member_config().command("etcd")


def test_help_documents_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "leibrix", "master", "--help"], capture_output=True, text=True, check=True
    )
    text = " ".join(result.stdout.split())
    for opt in OPTIONS:
        assert opt.flag in text, opt.flag
        assert opt.env in text, opt.env
    assert "--config" in text and "LEIBRIX_CONFIG" in text
