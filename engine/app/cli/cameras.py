"""`spacevllm cameras ls | add | rm`: the camera registry in Redis, which a running ingest follows."""
from __future__ import annotations

import click

from engine.app.cli.common import config_option, redis_client, redis_option


@click.group()
def cameras() -> None:
    """Cameras: ls (with health), add, rm."""


@cameras.command("ls")
@config_option
@redis_option
def cameras_ls(config_path, redis_url) -> None:
    # the registered cameras, and any an ingest announces without their being registered
    from stream.cameras import CameraRegistry
    from stream.health import read_health
    from stream.redis_link import text
    from stream.urls import redact_url

    client, keys = redis_client(config_path, redis_url)
    registered = {c.id: c for c in CameraRegistry(client, keys).all()}
    announced = {text(m) for m in client.smembers(keys.cameras())}
    click.echo("ID\tSTATE\tFPS\tDECODED\tDROPPED\tRECONNECTS\tURL\tLAST ERROR")
    for cid in sorted(set(registered) | announced):
        try:
            h = read_health(client, keys, cid)
        except ValueError:
            h = None
        url = redact_url(registered[cid].url) if cid in registered else "(not registered)"
        if h is None:
            click.echo(f"{cid}\t-\t-\t-\t-\t-\t{url}\t")
        else:
            click.echo(f"{cid}\t{h.state.value}\t{h.fps:.1f}\t{h.frames_decoded}\t{h.frames_dropped}\t{h.reconnects}\t{url}\t{h.last_error}")


@cameras.command("add")
@click.argument("camera_id")
@click.argument("url")
@click.option("--replace", is_flag=True, help="Replace a camera with this id.")
@config_option
@redis_option
def cameras_add(camera_id, url, replace, config_path, redis_url) -> None:
    """Register a camera; a running ingest starts it."""
    from pydantic import ValidationError

    from stream.cameras import CameraExists, CameraRegistry
    from engine.contracts.errors import error_lines
    from engine.contracts.settings import CameraSettings

    client, keys = redis_client(config_path, redis_url)
    try:
        cam = CameraSettings(id=camera_id, url=url)
    except ValidationError as exc:
        raise click.ClickException("; ".join(error_lines(exc.errors(), whole="camera"))) from None
    try:
        CameraRegistry(client, keys).add(cam, replace=replace)
    except CameraExists:
        raise click.ClickException(f"camera {camera_id!r} exists (--replace replaces it)") from None
    click.echo(camera_id)


@cameras.command("rm")
@click.argument("camera_id")
@config_option
@redis_option
def cameras_rm(camera_id, config_path, redis_url) -> None:
    """Unregister a camera; a running ingest stops it."""
    from stream.cameras import CameraRegistry

    client, keys = redis_client(config_path, redis_url)
    if not CameraRegistry(client, keys).remove(camera_id):
        raise click.ClickException(f"no registered camera {camera_id!r}")
    click.echo(f"removed {camera_id}")
