"""The one CLI: `spacevllm ...`. Commands only parse, build and call `run()`.

One module per command group: roles (up, ingest, engine, serve, media, mqtt), queries (query), cameras, windows
(windows dead), events (events tail), tokens (token), model (train, train-match, calibrate, eval, make-eval-set,
validate-config), export; common holds what they share (config, Redis client, options)."""
from __future__ import annotations

import logging
import sys

import click

from engine.app.cli import cameras, events, export, model, queries, roles, tokens, windows


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """SpaceVLLM: streaming spatio-temporal video grounding."""
    _setup_logging(verbose)


for command in (roles.up, roles.ingest, roles.engine, roles.serve, roles.media, roles.mqtt,
                model.train, model.train_match_cmd, model.calibrate, model.eval_cmd, model.make_eval_set, model.validate_config,
                queries.query, cameras.cameras, windows.windows, events.events, tokens.token, export.export):
    main.add_command(command)
