"""Where webhooks may go: the URL checked at registration (422, no DNS), every resolved address checked at
connect time (deny list, the service's own ports on loopback, the allow list), the connection made to the
checked address."""
from __future__ import annotations

import ipaddress
import socket

import pytest

from api.webhooks import HostPolicy
from engine.contracts.queries import QueryError, QueryRegistry, StandingQuery, Webhook, parse_sink_url, validate_query
from tests.api.conftest import KEYS
from tests.api.events_helpers import make_event, write_event
from tests.api.webhook_helpers import SECRET, Sinks, dead_letters, dispatcher, run_until, started


@pytest.fixture
def sinks():
    made = Sinks()
    yield made
    made.close()


# ---- registration: what needs no DNS ---------------------------------------------------------------
@pytest.mark.parametrize("url, host, port, target", [
    ("http://127.0.0.1:8080/hook?a=1", "127.0.0.1", 8080, "/hook?a=1"),
    ("https://Hooks.Example.com./in", "hooks.example.com", 443, "/in"),
    ("http://[::1]:9000", "::1", 9000, "/"),
    ("http://10.1.2.3/x", "10.1.2.3", 80, "/x"),  # private ranges: LAN integrators
])
def test_parse_sink_url_when_acceptable_then_taken_apart(url, host, port, target):
    u = parse_sink_url(url)
    assert (u.host, u.port, u.target) == (host, port, target)


REFUSED = [
    ("ftp://example.com/x", "http:// or https://"),
    ("http://example.com/a b", "printable ASCII"),
    ("http://user:pw@example.com/", "user:password@"),
    ("http://127.0.0.1:0x50/", "port must be a decimal number in 1-65535"),
    ("http://example.com:0/", "port must be a decimal number in 1-65535"),
    ("http://example.com:65536/", "port must be a decimal number in 1-65535"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://2852039166/", "link-local"),  # 169.254.169.254 written as one number
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://metadata.google.internal./computeMetadata/v1/", "cloud metadata"),
    ("http://0.0.0.0:8080/", "unspecified"),
    ("http://224.0.0.251/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://exa$mple.com/", "not a valid host name"),
]


@pytest.mark.parametrize("url, msg", REFUSED)
def test_parse_sink_url_when_refused_then_the_message_says_why(url, msg):
    with pytest.raises(ValueError, match=msg.replace("$", r"\$")):
        parse_sink_url(url)


@pytest.mark.parametrize("url, msg", REFUSED[:8])
def test_post_query_when_webhook_url_refused_then_422_says_why(api, url, msg):
    with api.client("write") as http:
        r = http.post("/v1/queries", json={"text": "x", "webhooks": [{"url": url, "secret": SECRET}]})
    assert r.status_code == 422
    assert any(d["loc"] == ["body", "webhooks", 0, "url"] and msg in d["msg"] for d in r.json()["detail"]), r.json()


def test_stored_query_when_its_url_is_refused_today_then_still_readable(redis_client):
    # a record written before the checks tightened keeps its query running (the dispatcher refuses the sink)
    registry = QueryRegistry(redis_client, KEYS)
    registry.add(StandingQuery("q1", "x", webhooks=(Webhook("http://user:pw@127.0.0.1:0x50/", SECRET),)))
    assert registry.get("q1").webhooks[0].url == "http://user:pw@127.0.0.1:0x50/"
    with pytest.raises(QueryError, match="user:password@"):
        validate_query(registry.get("q1").to_dict())


# ---- connect time: every resolved address ---------------------------------------------------------------
@pytest.mark.parametrize("url, address, policy, why", [
    ("http://h:80/", "169.254.169.254", HostPolicy(), "link-local"),
    ("http://h:80/", "::ffff:169.254.169.254", HostPolicy(), "link-local"),
    ("http://h:6379/", "127.0.0.1", HostPolicy(own_ports=[6379, 8080]), "own port"),
    ("http://h:6379/", "127.0.0.2", HostPolicy(own_ports=[6379]), "own port"),
    ("http://h:6379/", "::1", HostPolicy(own_ports=[6379]), "own port"),
    ("http://h:6379/", "10.0.0.5", HostPolicy(own_ports=[6379]), None),  # another host's Redis port: not ours
    ("http://h:80/", "127.0.0.1", HostPolicy(), None),
    ("http://h:80/", "127.0.0.1", HostPolicy(allow=["10.0.0.0/8"]), "webhook_allow_hosts"),
    ("http://h:80/", "10.9.8.7", HostPolicy(allow=["10.0.0.0/8"]), None),
    ("http://hooks.example.com/", "203.0.113.9", HostPolicy(allow=["hooks.example.com"]), None),
    ("http://other.example.com/", "203.0.113.9", HostPolicy(allow=["hooks.example.com"]), "webhook_allow_hosts"),
    ("http://hooks.example.com/", "169.254.169.254", HostPolicy(allow=["hooks.example.com"]), "link-local"),
])
def test_host_policy_when_address_checked_then_refused_or_not(url, address, policy, why):
    refusal = policy.refusal(parse_sink_url(url), ipaddress.ip_address(address))
    assert (refusal is None) if why is None else (why in refusal)


@pytest.fixture
def fake_dns(monkeypatch):
    """Names that resolve as the test says (others as usual)."""
    names: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in names:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port, 0, 0) if ":" in a else (a, port)) for a in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def deliver_one(redis_client, url: str, **settings):
    QueryRegistry(redis_client, KEYS).add(StandingQuery("q1", "x", webhooks=(Webhook(url, SECRET),)))
    d = started(redis_client, dispatcher(redis_client, **settings))
    write_event(redis_client, KEYS, make_event(1, query="q1"))
    return d


def test_connect_when_a_name_resolves_to_a_denied_address_then_refused_and_nothing_sent(redis_client, sinks, fake_dns):
    good = sinks.receiver()
    fake_dns["rebind.test"] = ["127.0.0.1", "169.254.169.254"]  # one of its addresses is denied: the name is
    d = deliver_one(redis_client, f"http://rebind.test:{good.port}/hooks/private-path-token")
    run_until(d, lambda: dead_letters(redis_client), what="the dead letter")
    assert dead_letters(redis_client)[0]["error"] == "host not allowed: 169.254.169.254 (link-local (cloud metadata lives at 169.254.169.254))"
    assert good.got == []
    d.teardown()


def test_connect_when_a_name_resolves_then_the_checked_address_is_used(redis_client, sinks, fake_dns):
    good = sinks.receiver()
    fake_dns["hooks.test"] = ["127.0.0.1"]  # a name no real resolver knows: reached only through the checked answer
    d = deliver_one(redis_client, f"http://hooks.test:{good.port}/hooks/private-path-token")
    run_until(d, lambda: good.got, what="the delivery")
    assert good.got[0]["headers"]["Host"] == f"hooks.test:{good.port}" and good.got[0]["path"] == "/hooks/private-path-token"
    d.teardown()


def test_connect_when_sink_is_the_services_own_port_then_refused(redis_client, sinks):
    own = sinks.receiver()  # stands for the API (or Redis) port: registration cannot know it, the dispatcher does
    d = deliver_one(redis_client, own.url.replace("127.0.0.1", "localhost"), own_ports=(own.port,))
    run_until(d, lambda: dead_letters(redis_client), what="the dead letter")
    assert "this service's own port" in dead_letters(redis_client)[0]["error"] and own.got == []
    d.teardown()


@pytest.mark.parametrize("allow, delivered", [(["10.0.0.0/8"], False), (["127.0.0.1"], True), (["localhost"], False)])
def test_connect_when_allow_list_set_then_only_listed_hosts(redis_client, sinks, allow, delivered):
    sink = sinks.receiver()
    d = deliver_one(redis_client, sink.url, webhook_allow_hosts=allow)
    run_until(d, lambda: sink.got or dead_letters(redis_client), what="an outcome")
    assert bool(sink.got) is delivered
    assert delivered or "webhook_allow_hosts" in dead_letters(redis_client)[0]["error"]
    d.teardown()
