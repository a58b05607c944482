"""The embedded Redis with auth: a random password in a 0600 file, the default user off, and a service
user that cannot run administrative commands; the password never on a command line."""
from __future__ import annotations

import os

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream.redis_server import EmbeddedRedis, connect

ADMIN = [("CONFIG", "SET", "dir", "/tmp"), ("CONFIG", "GET", "dir"), ("SAVE",), ("BGSAVE",), ("SHUTDOWN", "NOSAVE"),
         ("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("DEBUG", "OBJECT", "x"), ("MODULE", "LIST"), ("ACL", "SETUSER", "x", "on"),
         # scripting: a bounded Lua loop stalls the whole server; the service runs no scripts
         ("EVAL", "local i = 0 while i < 1e9 do i = i + 1 end", "0"), ("SCRIPT", "FLUSH"), ("EVALSHA", "0" * 40, "0")]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    server = EmbeddedRedis.start(tmp_path_factory.mktemp("secured"), appendonly=False, auth=True)
    yield server
    server.stop()


def test_start_when_auth_then_password_file_is_private_and_not_on_the_command_line(secured):
    assert oct(secured.password_file.stat().st_mode & 0o777) == "0o600"
    assert len(secured.password) >= 24 and secured.password_file.read_text().strip() == secured.password
    cmdline = open(f"/proc/{secured.process.pid}/cmdline", "rb").read().decode(errors="replace")
    assert secured.password not in cmdline
    assert secured.password not in (secured.data_dir / "users.acl").read_text()
    assert secured.password not in secured.display_url and "***" in secured.display_url


def test_connect_when_no_or_wrong_password_then_refused(secured):
    once = {"port": secured.port, "retry": Retry(NoBackoff(), 0)}  # AuthenticationError is a ConnectionError: no retries
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**once).ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        redis.Redis(username="svl", password="wrong", **once).ping()
    with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
        redis.Redis(username="default", password="", **once).ping()


def test_service_user_when_doing_its_work_then_allowed(secured):
    c = connect(secured.url)
    c.hset("q", "a", "1")
    c.xadd("s", {"a": 1})
    c.xgroup_create("s", "g", id="0")
    c.xreadgroup("g", "c1", {"s": ">"})
    c.publish("ch", "x")
    c.set("f", b"\x89PNG", px=1000)
    pipe = c.pipeline()
    pipe.watch("f")
    pipe.multi()
    pipe.set("f", "y")
    pipe.execute()
    assert c.get("f") == b"y"
    assert list(c.scan_iter("q*")) == [b"q"] and c.xinfo_groups("s")


@pytest.mark.parametrize("command", ADMIN, ids=lambda c: " ".join(c[:2]))
def test_service_user_when_running_an_admin_command_then_noperm(secured, command):
    c = connect(secured.url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.execute_command(*command)


def test_start_when_restarted_on_the_same_dir_then_same_password(tmp_path):
    first = EmbeddedRedis.start(tmp_path, appendonly=False, auth=True)
    password = first.password
    first.stop()
    again = EmbeddedRedis.start(tmp_path, appendonly=False, auth=True)
    try:
        assert again.password == password and connect(again.url).ping()
    finally:
        again.stop()


def test_start_when_the_data_dir_was_left_readable_then_it_and_the_aof_become_owner_only(tmp_path):
    # given a data dir an older version left world-readable, with an AOF
    d = tmp_path / "redis"
    d.mkdir(mode=0o755)
    (d / "appendonly.aof").write_text("")
    os.chmod(d / "appendonly.aof", 0o644)
    # when the embedded server starts on it (and writes)
    server = EmbeddedRedis.start(d, appendonly=True, auth=True)
    try:
        connect(server.url).set("k", "v")
    finally:
        server.stop()
    # then the directory is 0700 and every file in it (AOF, password, ACL, log) 0600
    assert oct(d.stat().st_mode & 0o777) == "0o700"
    files = [p for p in d.rglob("*") if p.is_file()]
    assert files and all(oct(p.stat().st_mode & 0o777) == "0o600" for p in files), \
        {str(p.relative_to(d)): oct(p.stat().st_mode & 0o777) for p in files}
