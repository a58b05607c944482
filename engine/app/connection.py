"""The checked Redis connection every role and operator command opens, and the one-line error it fails with.

Kept apart from engine/app/service.py so a command that only talks to Redis (`spacevllm query ls`) does not
import torch with the serving code."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import redis
from redis.exceptions import RedisClusterException

from engine.contracts.settings import RedisSettings
from stream.keys import LayoutMismatch, check_layout
from stream.redis_server import connect, private_dir
from stream.urls import redact_url


def private_state(data_dir: str | Path) -> Path:
    """What a serving process writes (the data dir, the embedded Redis's AOF, media, tokens, the ONNX cache) is its
    owner's only: the process's umask is 077 and the data dir 0700 (tightened if an older version left it open)."""
    os.umask(0o077)
    try:
        return private_dir(Path(data_dir))
    except OSError as exc:  # a read-only or foreign data dir (a container's): the roles that write there will say so
        log.warning("data dir %s: cannot make it private: %s", data_dir, exc)
        return Path(data_dir)


log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """The service cannot start; the message is one line for the operator."""


def checked_client(url: str, settings: RedisSettings) -> redis.Redis:
    """A client for `url` that has answered a PING and whose data uses `settings`' key layout (recorded on first
    use); ServiceError with one line (the URL's password redacted) when Redis cannot be reached or disagrees."""
    try:
        client = connect(url, cluster=settings.cluster)
        client.ping()
        check_layout(client, settings.keys())
    except LayoutMismatch as exc:
        raise ServiceError(str(exc)) from None
    # RedisClusterException is not a RedisError; ValueError is a malformed URL
    except (redis.RedisError, RedisClusterException, ValueError) as exc:
        raise ServiceError(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
    return client
