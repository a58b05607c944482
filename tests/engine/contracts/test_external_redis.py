"""An external Redis as production runs it: TLS (`rediss://`), an ACL user without admin commands, the default user
off. Ingest, the engine, the SDK and the CLI work through it; the password never reaches the output."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import redis

from engine.contracts.client import GroundingClient
from stream.keys import Keys
from stream.redis_server import connect, free_port
from tests.engine.harness import ALWAYS, add_queries, events_of, ingest, worker
from tests.waiting import pings, wait_for

PASSWORD = "s3cret-Pw-4-tls"


@pytest.fixture
def tls_redis(tmp_path):
    if not shutil.which("redis-server") or not shutil.which("openssl"):
        pytest.skip("needs Debian's redis-server (built with TLS) and openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    acl = tmp_path / "users.acl"
    acl.write_text(f"user default off\nuser svc on >{PASSWORD} ~* &* +@all -@admin -@dangerous\n")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                             "--tls-auth-clients", "no", "--aclfile", str(acl), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://svc:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    wait_for(lambda: proc.poll() is not None or pings(lambda: connect(url)), 10, "the TLS redis-server to start")
    assert proc.poll() is None, "the TLS redis-server exited"
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_the_service_works_through_tls_and_an_acl_user(tls_redis, tiny_model_dir, tmp_path):
    client = connect(tls_redis)
    keys = Keys("tls:")
    # given an ACL user that may not run administrative commands
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.config_get("dir")
    # when ingest, the engine and the SDK work through rediss://
    ingest(client, keys)
    add_queries(client, keys, ALWAYS)
    w = worker(client, keys, tiny_model_dir)
    w.run(idle_exit_s=1.0)
    # then windows are processed into events, readable with the SDK
    assert w.stats.processed > 5 and events_of(client, keys)
    sdk = list(GroundingClient(client, keys).events(since="0", block_ms=0, stop_when_idle=True))
    assert len(sdk) == len(events_of(client, keys))
    # and the CLI reaches it too, without ever printing the password
    cfg = tmp_path / "svc.yaml"
    cfg.write_text("redis:\n  prefix: 'tls:'\n")
    out = subprocess.run([sys.executable, "-m", "engine.app.cli", "query", "ls", "--config", str(cfg), "--redis-url", tls_redis],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "q-any" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "engine.app.cli", "query", "ls", "--config", str(cfg), "--redis-url",
                          tls_redis.replace(PASSWORD, PASSWORD + "-wrong")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "cannot reach Redis" in bad.stderr
    assert PASSWORD not in out.stdout + out.stderr + bad.stdout + bad.stderr
