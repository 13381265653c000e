"""A real PostgreSQL server on 127.0.0.1 for tests: initdb into a temporary folder and pg_ctl start, as
the `postgres` system user when the tests run as root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str:
    found = shutil.which(name) or next((str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: install the Debian package `postgresql` "
                           "(.ci/run does this on CI machines)")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_server():
    """Yields connection settings {host, port, user, password, db} of a fresh server with one database.
    Its folder is a new one under /tmp (pytest's tmp_path is root-only, which the postgres user cannot enter)."""
    folder = Path(tempfile.mkdtemp(prefix="tuneforge-pg-"))
    data = folder / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    subprocess.run(_as_postgres([_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "tuneforge", "--no-sync"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
                                 f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]),
                   check=True, capture_output=True)
    try:
        subprocess.run([_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "tuneforge", "-d", "postgres", "-c",
                        "CREATE DATABASE dagster"], check=True, capture_output=True)
        yield {"host": "127.0.0.1", "port": port, "user": "tuneforge", "password": "unused-with-trust", "db": "dagster"}
    finally:
        subprocess.run(_as_postgres([_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
