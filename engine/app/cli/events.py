"""`spacevllm events tail`: the grounding events as they are published, one line each (or their JSON)."""
from __future__ import annotations

import click

from engine.app.cli.common import config_option, redis_client, redis_option


@click.group()
def events() -> None:
    """Grounding events."""


@events.command("tail")
@click.option("--camera", default=None)
@click.option("--query", "query_id", default=None)
@click.option("--since", default="$", help="Stream id, Unix seconds, or '$' (only new; default).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw event JSON.")
@config_option
@redis_option
def events_tail(camera, query_id, since, as_json, config_path, redis_url) -> None:
    from engine.app.service import format_event
    from engine.contracts.client import GroundingClient

    client, keys = redis_client(config_path, redis_url)
    try:
        for _, e in GroundingClient(client, keys).events(since=since, camera=camera, query=query_id):
            click.echo(e.to_json() if as_json else format_event(e))
    except ValueError as exc:  # a --since it cannot read
        raise click.ClickException(str(exc)) from None
