"""`spacevllm token create`: API tokens, kept as SHA-256 digests in the token file."""
from __future__ import annotations

import click

from engine.app.cli.common import config_option, service_config


@click.group()
def token() -> None:
    """API tokens (stored hashed in the token file)."""


@token.command("create")
@click.option("--name", required=True, help="Who uses it (shown in 403 messages).")
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), default="read", show_default=True)
@click.option("--file", "path", default=None, help="Token file (default: api.tokens_file, else <data_dir>/api-tokens.json).")
@config_option
def token_create(name, scope, path, config_path) -> None:
    """Create a token; prints it once (only its SHA-256 is kept)."""
    from api.auth import Scope, TokenFileError, add_token
    from api.server import tokens_path

    cfg = service_config(config_path)
    target = path or tokens_path(cfg.api, cfg.data_dir)
    try:
        click.echo(add_token(target, name, Scope(scope)))
    except TokenFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"(stored hashed in {target}; a running API accepts it within a second)", err=True)
