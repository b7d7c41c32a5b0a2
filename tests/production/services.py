"""Real servers for the production-profile suite: PostgreSQL, an S3 server, MLflow with auth.

Each is a context manager that starts the server on 127.0.0.1 and a free port, waits until it
answers and stops it on exit, also when the test fails. Every password and key is random per
run and travels only through environment variables (the Postgres password as PGPASSWORD,
which libpq, psycopg2 and asyncpg read, so no connection URL carries it).

- PostgreSQL: Debian's `postgresql` package, `initdb` into a temporary folder; as root, the
  server runs as the unprivileged `postgres` user (Postgres refuses to run as root).
- S3: moto's server mode (`python -m moto.server`, from PyPI): a pure-Python S3 API, nothing
  to download at run time, starts in about a second. MinIO is not on PyPI or in Debian.
- MLflow: `mlflow server --app-name basic-auth`, backend and auth stores on Postgres,
  artifacts proxied to S3 (`--artifacts-destination s3://...`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import cli_env, free_port, wait_http

PG_USER = "seqrec"
PG_OS_USER = "postgres"  # the Debian package's system user, for when the tests run as root
STARTUP_TIMEOUT_S = 180


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM to the server's process group, SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


def pg_bin_dir() -> Path:
    """Folder of initdb/postgres: $SEQREC_PG_BIN, PATH, or Debian's /usr/lib/postgresql/N/bin."""
    if os.environ.get("SEQREC_PG_BIN"):
        return Path(os.environ["SEQREC_PG_BIN"])
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise AssertionError("PostgreSQL server binaries not found: `apt-get install -y "
                             "postgresql` (Debian) or set SEQREC_PG_BIN")
    return found[-1].parent


@dataclass
class Postgres:
    port: int
    password: str
    user: str = PG_USER

    def url(self, database: str, driver: str = "postgresql") -> str:
        """Connection URL without the password (it comes from PGPASSWORD)."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password}

    def connect(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                password=self.password, dbname=database)

    def create_database(self, name: str) -> str:
        conn = self.connect()
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def query(self, database: str, sql: str, args: tuple = ()) -> list[tuple]:
        conn = self.connect(database)
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        conn.close()
        return rows


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (scram-sha-256, random password)."""
    bin_dir = pg_bin_dir()
    as_root = os.geteuid() == 0
    # Not under pytest's tmp folder: it is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="seqrec-pg-"))
    password = secrets.token_urlsafe(24)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    user = PG_OS_USER if as_root else None
    if as_root:
        shutil.chown(root, PG_OS_USER)
        shutil.chown(pwfile, PG_OS_USER)
    proc = None
    try:
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", PG_USER,
             f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync",
             "--locale=C"],
            user=user, check=True, capture_output=True, timeout=120,
        )
        pwfile.unlink()
        port = free_port()
        log = (root / "postgres.log").open("w")
        # fsync off: a test database that dies with its test needs no crash safety.
        proc = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            user=user, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        server = Postgres(port=port, password=password)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                server.connect().close()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("postgres did not start:\n"
                                         + (root / "postgres.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        yield server
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class S3:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """What MLflow (boto3) and DVC (s3fs) read to reach this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [obj["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents", [])]


@contextmanager
def s3_server(root: Path, buckets: tuple[str, ...]) -> Iterator[S3]:
    """moto's S3 server on 127.0.0.1 with `buckets` created."""
    port = free_port()
    log = (root / "s3.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=cli_env())
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", STARTUP_TIMEOUT_S, proc)
        s3 = S3(f"http://127.0.0.1:{port}", "test-" + secrets.token_hex(8),
                secrets.token_urlsafe(24))
        for bucket in buckets:
            s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop(proc)
        log.close()


@dataclass
class MLflowServer:
    uri: str
    admin: tuple[str, str]
    env: dict[str, str] = field(default_factory=dict)  # what the server itself ran with

    @contextmanager
    def as_admin(self):
        """(AuthServiceClient, MlflowClient) acting as the admin inside the block (MLflow
        reads the credentials from the environment on every request)."""
        from mlflow import MlflowClient
        from mlflow.server import get_app_client

        with credentials(*self.admin):
            yield (get_app_client("basic-auth", tracking_uri=self.uri),
                   MlflowClient(tracking_uri=self.uri, registry_uri=self.uri))

    def user_env(self, user: tuple[str, str]) -> dict[str, str]:
        """Environment of a client process acting as `user`."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": user[0],
                "MLFLOW_TRACKING_PASSWORD": user[1]}


@contextmanager
def credentials(username: str, password: str) -> Iterator[None]:
    """MLFLOW_TRACKING_USERNAME/PASSWORD in this process for the block (MLflow reads them
    on every request)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict(zip(keys, (username, password), strict=True)))
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_auth_config(path: Path, auth_db_url: str) -> Path:
    """basic-auth settings: nobody may read or write what they were not granted.

    The admin's name and password come from MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD and the auth
    database's password from PGPASSWORD, so the file holds no secret.
    """
    path.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {auth_db_url}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return path


@contextmanager
def mlflow_server(root: Path, pg: Postgres, s3: S3, bucket: str) -> Iterator[MLflowServer]:
    """`mlflow server --app-name basic-auth`: Postgres stores, artifacts proxied to S3."""
    port = free_port()
    backend = pg.create_database("mlflow")
    auth_db = pg.create_database("mlflow_auth")
    admin = ("admin", secrets.token_urlsafe(24))
    server_env = {
        **pg.env(), **s3.env(),
        "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(root / "auth.ini", auth_db)),
        "MLFLOW_AUTH_ADMIN_USERNAME": admin[0], "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
    }
    log = (root / "mlflow.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", backend, "--artifacts-destination", f"s3://{bucket}/mlflow"],
        env=cli_env(**server_env), stdout=log, stderr=subprocess.STDOUT, cwd=root,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", STARTUP_TIMEOUT_S, proc)
        yield MLflowServer(uri, admin, server_env)
    finally:
        stop(proc)
        log.close()


def http_status(url: str, user: tuple[str, str] | None = None, data: bytes | None = None,
                method: str | None = None) -> int:
    """Status code of one request, with basic auth when `user` is given."""
    import base64

    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
