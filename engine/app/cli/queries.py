"""`spacevllm query add | ls | rm`: standing queries, through the client SDK (engine/contracts/client.py)."""
from __future__ import annotations

import os
import sys

import click

from engine.app.cli.common import config_option, redis_client, redis_option


@click.group()
def query() -> None:
    """Standing queries: add, ls, rm."""


SECRET_ENV = "SVL_WEBHOOK_SECRET"


def _webhook_secret(secret_file: str | None) -> str:
    """The sinks' HMAC secret, never from the command line (other users of the machine read argv in `ps`): a file,
    else $SVL_WEBHOOK_SECRET, else a hidden prompt on a terminal."""
    if secret_file:
        with open(secret_file) as f:
            secret = f.read().strip()
    else:
        secret = os.environ.get(SECRET_ENV, "")
        if not secret and sys.stdin.isatty():
            secret = click.prompt("webhook secret", hide_input=True)
    if not secret:
        raise click.UsageError(f"--webhook needs its secret from --webhook-secret-file FILE or ${SECRET_ENV} "
                               "(never on the command line: other users can read it in ps)")
    return secret


def _webhooks(urls: tuple[str, ...], secret_file: str | None) -> list[dict]:
    """`--webhook URL` values as the query schema's sinks, all signed with the one secret."""
    if not urls:
        return []
    secret = _webhook_secret(secret_file)
    return [{"url": url, "secret": secret} for url in urls]


@query.command("add")
@click.argument("text")
@click.option("--camera", "cameras", multiple=True, help="Camera id (repeat; default: every camera).")
@click.option("--threshold", type=float, default=None, help="Match threshold in [0, 1] (default: the model's calibrated one).")
@click.option("--min-duration", type=float, default=None, help="Seconds (default: the query schema's, 0).")
@click.option("--cooldown", type=float, default=None, help="Seconds (default: the query schema's, 4).")
@click.option("--id", "query_id", default=None)
@click.option("--webhook", "webhooks", multiple=True, metavar="URL", help="A sink for this query's events (repeat).")
@click.option("--webhook-secret-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help=f"The sinks' HMAC secret (default: ${SECRET_ENV}, else asked for on a terminal).")
@click.option("--replace", is_flag=True, help="Replace a query with this --id (without it, an existing id is an error).")
@config_option
@redis_option
def query_add(text, cameras, threshold, min_duration, cooldown, query_id, webhooks, webhook_secret_file, replace, config_path,
              redis_url) -> None:
    """Add a standing query (validated by the one query schema, engine.contracts.queries.QuerySpec)."""
    from engine.contracts.client import GroundingClient
    from engine.contracts.queries import QueryError, QueryExists

    hooks = _webhooks(webhooks, webhook_secret_file)
    client, keys = redis_client(config_path, redis_url)
    try:
        q = GroundingClient(client, keys).add_query(text, list(cameras) or None, threshold, min_duration, cooldown, query_id,
                                                    webhooks=hooks or None, replace=replace)
    except QueryError as exc:
        raise click.ClickException(f"invalid query: {exc}") from None
    except QueryExists:
        raise click.ClickException(f"query {query_id!r} exists (--replace replaces it)") from None
    click.echo(q.id)


# no docstrings on ls and rm: their --help says only what the options say
@query.command("ls")
@config_option
@redis_option
def query_ls(config_path, redis_url) -> None:
    from engine.contracts.client import GroundingClient

    client, keys = redis_client(config_path, redis_url)
    for q in GroundingClient(client, keys).list_queries():
        shown = q.threshold if q.threshold is not None else "model-default"
        click.echo(f"{q.id}\t{','.join(q.cameras)}\tthreshold={shown}\t{q.text}")


@query.command("rm")
@click.argument("query_id")
@config_option
@redis_option
def query_rm(query_id, config_path, redis_url) -> None:
    from engine.contracts.client import GroundingClient

    client, keys = redis_client(config_path, redis_url)
    if not GroundingClient(client, keys).remove_query(query_id):
        raise click.ClickException(f"no query {query_id!r}")
    click.echo(f"removed {query_id}")
