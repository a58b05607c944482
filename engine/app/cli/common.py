"""What the commands share: the service config, a checked Redis client, and the options that name them.

Imports stay inside the functions: `spacevllm --help` and the Redis-only commands must not pay for torch."""
from __future__ import annotations

import click

config_option = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                             help="Service config YAML (default: embedded defaults).")
redis_option = click.option("--redis-url", default=None, envvar="REDIS_URL", help="Redis URL (or REDIS_URL).")
health_port_option = click.option("--health-port", type=int, default=None, envvar="SVL_HEALTH_PORT",
                                  help="Serve GET /healthz on this port (container healthchecks; or SVL_HEALTH_PORT).")


def service_config(path):
    """The service config at `path` (None: the embedded defaults); a bad file ends the command with one line."""
    from engine.contracts.settings import ConfigError, load_service_config

    try:
        return load_service_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def redis_client(config_path, redis_url):
    """(client, keys) for an operator command: `--redis-url` or the config's Redis, checked like every role's."""
    from engine.app.connection import ServiceError, checked_client

    cfg = service_config(config_path)
    url = redis_url or cfg.redis.url
    if not url:
        raise click.ClickException("no Redis URL: pass --redis-url, set REDIS_URL, or set redis.url in the config "
                                   "(`spacevllm up` prints the URL of its embedded Redis)")
    try:
        return checked_client(url, cfg.redis), cfg.redis.keys()
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
