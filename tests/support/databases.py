"""Throw-away PostgreSQL and MariaDB servers for the source tests, in temp dirs on free loopback ports.

PostgreSQL refuses to run as root, so ``initdb``/``pg_ctl`` run as the
``postgres`` user (created by Debian's package) through ``runuser`` when the
tests run as root. MariaDB runs from ``mariadb-install-db`` + ``mariadbd
--no-defaults`` as ``mysql``. Both listen on 127.0.0.1 only and are stopped
(and their directories removed) at teardown. ``find_postgres``/``find_mariadb``
return ``None`` when the server binaries are missing; the fixtures then skip
with that reason (``make install`` installs both).

:func:`running_postgres` and :func:`running_mariadb` are the whole life of one
server as a context manager (skipping the test when the binaries are missing),
for a fixture of any scope: ``with databases.running_mariadb() as server: yield server``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from leibrix.store._ports import free_port

PG_PASSWORD = "pg-secret-pw"
MARIADB_PASSWORD = "maria-secret-pw"


def find_postgres() -> Path | None:
    """The directory of ``initdb``/``pg_ctl`` (Debian keeps them off PATH), or ``None``."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "pg_ctl")):
            return Path(d)
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def find_mariadb() -> tuple[str, str] | None:
    """``(mariadbd, mariadb-install-db)`` paths, or ``None``."""
    server = shutil.which("mariadbd") or (os.path.exists("/usr/sbin/mariadbd") and "/usr/sbin/mariadbd") or None
    install = shutil.which("mariadb-install-db")
    return (server, install) if server and install else None


def _as_user(user: str) -> list[str]:
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


@dataclass
class Server:
    """A running server: where it listens and the superuser's credentials."""

    kind: str
    host: str
    port: int
    user: str
    password: str
    root: Path

    def jdbc(self, database: str, *, user: str | None = None, password: str | None = None) -> str:
        sub = "postgresql" if self.kind == "postgresql" else "mariadb"
        return (f"jdbc:{sub}://{self.host}:{self.port}/{database}?user={user or self.user}"
                f"&password={password if password is not None else self.password}")

    def sqlalchemy_url(self, database: str) -> str:
        driver = "postgresql+psycopg" if self.kind == "postgresql" else "mysql+pymysql"
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"


def _wait_port(port: int, proc: subprocess.Popen | None, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text()[-2000:] if log.exists() else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} in {timeout}s: {log.read_text()[-2000:] if log.exists() else ''}")


def start_postgres(bindir: Path) -> Server:
    """initdb + pg_ctl start as ``postgres`` in a fresh temp dir; password auth on TCP."""
    root = Path(tempfile.mkdtemp(prefix="leibrix-pg-"))
    os.chmod(root, 0o755)
    data, pwfile, log = root / "data", root / "pw", root / "log"
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    sock = root
    subprocess.run([*_as_user("postgres"), str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                    f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                   check=True, capture_output=True)
    port = free_port()
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} -c fsync=off " \
           "-c full_page_writes=off -c synchronous_commit=off -c shared_buffers=32MB"
    subprocess.run([*_as_user("postgres"), str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts,
                    "-w", "-t", "60", "start"], check=True, capture_output=True)
    _wait_port(port, None, 30, log)
    return Server("postgresql", "127.0.0.1", port, "postgres", PG_PASSWORD, root)


def stop_postgres(server: Server, bindir: Path) -> None:
    subprocess.run([*_as_user("postgres"), str(bindir / "pg_ctl"), "-D", str(server.root / "data"), "-m", "immediate",
                    "-w", "stop"], capture_output=True)
    shutil.rmtree(server.root, ignore_errors=True)


def start_mariadb(server_bin: str, install_bin: str) -> tuple[Server, subprocess.Popen]:
    """mariadb-install-db + mariadbd as ``mysql``; a password-authenticated ``leibrix`` superuser on TCP."""
    root = Path(tempfile.mkdtemp(prefix="leibrix-maria-"))
    os.chmod(root, 0o755)
    data, sock, log = root / "data", root / "mysqld.sock", root / "log"
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        shutil.chown(root, "mysql", "mysql")
    subprocess.run([install_bin, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                    "--skip-test-db", *user], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([server_bin, "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
                             "--bind-address=127.0.0.1", f"--log-error={log}", f"--pid-file={root / 'pid'}",
                             f"--tmpdir={root}",  # its own: another process's cleanup of /tmp cannot pull files away
                             "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0",
                             "--skip-name-resolve", *user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _create_user(proc, port, sock, log)
    except BaseException:
        proc.kill()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Server("mariadb", "127.0.0.1", port, "leibrix", MARIADB_PASSWORD, root), proc


def _create_user(proc: subprocess.Popen, port: int, sock: Path, log: Path) -> None:
    _wait_port(port, proc, 60, log)
    import pymysql

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = pymysql.connect(unix_socket=str(sock), user="root", password="")
            break
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn.cursor() as cur:
        cur.execute("CREATE USER 'leibrix'@'%%' IDENTIFIED BY %s", (MARIADB_PASSWORD,))
        cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'leibrix'@'%' WITH GRANT OPTION")
    conn.commit()
    conn.close()


def stop_mariadb(server: Server, proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(server.root, ignore_errors=True)


@contextmanager
def running_postgres() -> Iterator[Server]:
    """A throw-away PostgreSQL for the ``with`` block (``pytest.skip`` when its binaries are not installed)."""
    import pytest

    bindir = find_postgres()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: `make install` installs them")
    server = start_postgres(bindir)
    try:
        yield server
    finally:
        stop_postgres(server, bindir)


@contextmanager
def running_mariadb() -> Iterator[Server]:
    """A throw-away MariaDB for the ``with`` block (``pytest.skip`` when its binaries are not installed)."""
    import pytest

    found = find_mariadb()
    if found is None:
        pytest.skip("MariaDB server binaries (mariadbd, mariadb-install-db) are not installed: `make install` installs them")
    server, proc = start_mariadb(*found)
    try:
        yield server
    finally:
        stop_mariadb(server, proc)
