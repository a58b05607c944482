"""Operator commands against a real Redis: query add --replace, cameras ls, event lines with the event's time."""
from __future__ import annotations

from click.testing import CliRunner

from engine.app.cli import main
from engine.contracts.queries import QueryRegistry
from engine.app.service import format_event
from stream.cameras import CameraRegistry
from stream.config import CameraSettings
from stream.health import CameraHealth, CameraState
from stream.keys import Keys
from tests.api.events_helpers import make_event

KEYS = Keys()


def run(redis_url, *args, env=None):
    return CliRunner().invoke(main, [*args, "--redis-url", redis_url], catch_exceptions=False, env=env)


def test_query_add_when_id_exists_then_refused_unless_replace(redis_client, redis_url):
    assert run(redis_url, "query", "add", "the red circle", "--id", "q1").exit_code == 0
    r = run(redis_url, "query", "add", "the blue square", "--id", "q1")
    assert r.exit_code != 0 and "exists (--replace replaces it)" in r.output
    assert QueryRegistry(redis_client, KEYS).get("q1").text == "the red circle"
    r = run(redis_url, "query", "add", "the blue square", "--id", "q1", "--replace", "--webhook", "http://127.0.0.1:9/h",
            env={"SVL_WEBHOOK_SECRET": "k3y"})
    assert r.exit_code == 0
    q = QueryRegistry(redis_client, KEYS).get("q1")
    assert q.text == "the blue square" and q.webhooks[0].url == "http://127.0.0.1:9/h" and q.webhooks[0].secret == "k3y"


def test_query_add_when_a_webhook_has_no_secret_source_then_refused_saying_where_it_comes_from(redis_client, redis_url,
                                                                                             tmp_path):
    # given no secret in the environment or a file (and no terminal to ask on)
    r = run(redis_url, "query", "add", "the red circle", "--webhook", "http://127.0.0.1:9/h", env={"SVL_WEBHOOK_SECRET": ""})
    # then the command says where the secret comes from, and nothing is stored
    assert r.exit_code != 0 and "--webhook-secret-file" in r.output and "SVL_WEBHOOK_SECRET" in r.output
    assert QueryRegistry(redis_client, KEYS).all() == []
    # and a secret file works (the secret never on the command line)
    (tmp_path / "secret").write_text("s3cret\n")
    r = run(redis_url, "query", "add", "the red circle", "--id", "q2", "--webhook", "http://127.0.0.1:9/h",
            "--webhook-secret-file", str(tmp_path / "secret"), env={"SVL_WEBHOOK_SECRET": ""})
    assert r.exit_code == 0 and QueryRegistry(redis_client, KEYS).get("q2").webhooks[0].secret == "s3cret"


def test_query_add_when_invalid_then_the_field_is_named(redis_url):
    r = run(redis_url, "query", "add", "x", "--threshold", "2")
    assert r.exit_code != 0 and "threshold: must be in [0, 1.0]" in r.output


def test_cameras_ls_when_registered_and_running_then_health_and_redacted_url(redis_client, redis_url):
    CameraRegistry(redis_client, KEYS).add(CameraSettings(id="door", url="rtsp://u:pw123@10.0.0.5/s"))
    h = CameraHealth("door").moved(CameraState.RUNNING, fps=9.9, frames_decoded=50, frames_dropped=2, reconnects=1)
    redis_client.hset(KEYS.health("door"), mapping=h.to_dict())
    r = run(redis_url, "cameras", "ls")
    assert r.exit_code == 0
    line = r.output.splitlines()[1].split("\t")
    assert line[:6] == ["door", "running", "9.9", "50", "2", "1"] and line[6] == "rtsp://u:***@10.0.0.5/s"
    assert "pw123" not in r.output


def test_cameras_add_and_rm_when_called_then_registry_changes(redis_client, redis_url):
    assert run(redis_url, "cameras", "add", "c1", "synthetic://demo").exit_code == 0
    assert run(redis_url, "cameras", "add", "c1", "synthetic://demo").exit_code != 0
    assert [c.id for c in CameraRegistry(redis_client, KEYS).all()] == ["c1"]
    assert run(redis_url, "cameras", "rm", "c1").exit_code == 0
    assert CameraRegistry(redis_client, KEYS).all() == []


def test_format_event_when_old_event_then_line_starts_with_its_time():
    e = make_event(0)  # span 1700000000.0 - 1700000001.0
    assert format_event(e).startswith("2023-11-14 22:13:21.0 NEW ")


def test_train_options_when_built_from_the_train_command_then_each_option_is_a_field():
    import dataclasses

    from engine.app.cli.model import TrainOptions, train

    assert [f.name for f in dataclasses.fields(TrainOptions)] == [p.name for p in train.params]


def test_query_ls_when_redis_is_unreachable_then_one_line_with_the_password_redacted():
    r = CliRunner().invoke(main, ["query", "ls", "--redis-url", "redis://u:pw123@127.0.0.1:1/0"])
    assert r.exit_code == 1 and r.output.startswith("Error: cannot reach Redis at redis://u:***@127.0.0.1:1/0: ")
    assert "pw123" not in r.output and len(r.output.strip().splitlines()) == 1
