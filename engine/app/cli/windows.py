"""`spacevllm windows dead [ls] | retry | drop`: windows the engine gave up on (dead-lettered)."""
from __future__ import annotations

import click

from engine.app.cli.common import config_option, redis_client, redis_option, service_config


@click.group()
def windows() -> None:
    """Windows the engine could not process."""


@windows.group("dead", invoke_without_command=True)
@config_option
@redis_option
@click.pass_context
def windows_dead(ctx, config_path, redis_url) -> None:
    """Dead-lettered windows: ls (the default), retry REF, drop REF."""
    ctx.obj = (config_path, redis_url)
    if ctx.invoked_subcommand is None:
        ctx.invoke(windows_dead_ls)


def _window_source(ctx, config_path, redis_url):
    """The engines' window source; `--config` / `--redis-url` given before the subcommand count too."""
    from engine.serving.window_source import WindowSource

    config_path = config_path or (ctx.obj or (None, None))[0]
    redis_url = redis_url or (ctx.obj or (None, None))[1]
    client, keys = redis_client(config_path, redis_url)
    return WindowSource(client, keys, service_config(config_path).engine.group, "cli")


@windows_dead.command("ls")
@config_option
@redis_option
@click.pass_context
def windows_dead_ls(ctx, config_path=None, redis_url=None) -> None:
    """List dead-lettered windows: REF, when, camera, window start, deliveries, error."""
    from datetime import datetime, timezone

    dead = _window_source(ctx, config_path, redis_url).dead()
    for d in dead:
        when = datetime.fromtimestamp(d.failed_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{d.ref}\t{when}\tcamera={d.window.get('camera')} start_ms={d.window.get('start_ms')}\t"
                   f"deliveries={d.deliveries}\t{d.error}")
    if not dead:
        click.echo("no dead-lettered windows")


@windows_dead.command("retry")
@click.argument("ref")
@config_option
@redis_option
@click.pass_context
def windows_dead_retry(ctx, ref, config_path, redis_url) -> None:
    """Put a dead-lettered window back on its stream (REF as `ls` shows it: SHARD/ID)."""
    try:
        new_id = _window_source(ctx, config_path, redis_url).retry_dead(ref)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    click.echo(f"requeued {ref} as {new_id}")


@windows_dead.command("drop")
@click.argument("ref")
@config_option
@redis_option
@click.pass_context
def windows_dead_drop(ctx, ref, config_path, redis_url) -> None:
    """Delete a dead-lettered window."""
    try:
        _window_source(ctx, config_path, redis_url).drop_dead(ref)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    click.echo(f"dropped {ref}")
