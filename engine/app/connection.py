"""The checked Redis connection every role and operator command opens, and the one-line error it fails with.

Kept apart from engine/app/service.py so a command that only talks to Redis (`spacevllm query ls`) does not
import torch with the serving code."""
from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException

from engine.contracts.settings import RedisSettings
from stream.keys import LayoutMismatch, check_layout
from stream.redis_server import connect
from stream.urls import redact_url


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
