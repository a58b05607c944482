"""The service's roles: `up` (all of them on one machine), and `ingest`, `engine`, `serve`, `media`, `mqtt` (one per
container, engine/app/roles.py)."""
from __future__ import annotations

from contextlib import contextmanager

import click

from engine.app.cli.common import config_option, health_port_option, service_config


@contextmanager
def _one_line_errors():
    """A model that cannot load, or a role that cannot start, ends the command with one line, not a traceback."""
    from engine.app.connection import ServiceError
    from engine.model.checkpoint import CheckpointError

    try:
        yield
    except CheckpointError as exc:
        raise click.ClickException(f"cannot load the model: {exc}") from None
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@config_option
@click.option("--max-seconds", type=float, default=None, help="Stop after this long (default: until Ctrl-C).")
def up(config_path, max_seconds) -> None:
    """The main job: embedded Redis, demo camera, ingest, one engine worker, events printed live."""
    from engine.app.service import run_up

    cfg = service_config(config_path)
    with _one_line_errors():
        run_up(cfg, click.echo, max_seconds=max_seconds)


@click.command()
@config_option
@health_port_option
def ingest(config_path, health_port) -> None:
    """Ingest cameras into Redis windows (until SIGTERM/SIGINT). The config's cameras seed the camera registry in
    Redis; cameras added or removed there (API, `spacevllm cameras`) are picked up while running."""
    from engine.app.roles import run_ingest

    cfg = service_config(config_path)
    with _one_line_errors():
        run_ingest(cfg, click.echo, health_port)


@click.command()
@config_option
@click.option("--max-windows", type=int, default=None, help="Exit after this many windows (tests).")
@click.option("--exit-when-idle", type=float, default=None, help="Exit after this many seconds without a window (tests, benches).")
@click.option("--consumer", default=None, help="Consumer name in the group (default: host + random).")
@health_port_option
def engine(config_path, max_windows, exit_when_idle, consumer, health_port) -> None:
    """An engine worker: windows from Redis -> grounding events. Registers the config's queries."""
    from engine.app.roles import run_engine

    cfg = service_config(config_path)
    with _one_line_errors():
        run_engine(cfg, click.echo, consumer, health_port, max_windows=max_windows, idle_exit_s=exit_when_idle)


@click.command()
@config_option
@click.option("--host", default=None, help="Listen address (default: api.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default: api.port, 8080).")
def serve(config_path, host, port) -> None:
    """The HTTP API: /v1 queries, cameras, events (+ SSE), webhooks, /metrics, /healthz, /readyz."""
    from engine.app.roles import run_api

    cfg = service_config(config_path)
    with _one_line_errors():
        run_api(cfg, click.echo, host, port)


@click.command()
@config_option
@health_port_option
def media(config_path, health_port) -> None:
    """Event media: follow the event feed; a snapshot per event, a clip when it ends (files under media.dir)."""
    from engine.app.roles import run_media

    cfg = service_config(config_path)
    with _one_line_errors():
        run_media(cfg, click.echo, health_port)


@click.command()
@config_option
@health_port_option
def mqtt(config_path, health_port) -> None:
    """The MQTT publisher: events, per camera and query state and snapshot, Home Assistant discovery (mqtt.url)."""
    from engine.app.roles import run_mqtt

    cfg = service_config(config_path)
    with _one_line_errors():
        run_mqtt(cfg, click.echo, health_port)
