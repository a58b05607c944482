"""docker-compose.yml without a Docker engine:

(a) the file is valid against the Compose Specification: Debian's `docker-compose` (1.29, which
    validates against the compose-spec JSON schema it ships) runs `docker-compose config`;
(b) "compose without containers": each service's exact command and environment from the file run as
    local processes against a real Redis started with the file's own redis command, and the chain
    (ingest -> engine -> api) produces an event that the API serves; every service's healthcheck
    command passes. What differs from containers, and only that: the network (service names and
    ports are mapped to free loopback ports), mounted files (the host side of each volume), the data
    directory (a temporary one), and `spacevllm`/`python` (this interpreter).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from stream.redis_server import free_port, redis_server_binary
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV = {"REDIS_PASSWORD": "compose-test-redis-pw", "SVL_API_TOKEN": "compose-test-admin-token"}
CHAIN = ["ingest", "engine", "media", "api"]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:?message}, ${VAR:-default}."""
    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:\?|:-)([^}]*))?\}", sub, value)


def test_compose_file_when_validated_by_docker_compose_then_valid():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose; .ci/run does)")
    env = {**os.environ, **ENV}
    r = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    services = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "--services"], env=env, capture_output=True,
                              text=True).stdout.split()
    assert set(services) == {"redis", "ingest", "engine", "media", "api", "engine-gpu", "mosquitto", "mqtt"}
    # a secret left unset is refused with its message
    r = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env={"PATH": os.environ["PATH"]},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "set REDIS_PASSWORD" in r.stderr


def test_compose_file_when_read_then_has_the_required_shape():
    spec = yaml.safe_load(COMPOSE.read_text())
    s = spec["services"]
    assert "--appendonly" in s["redis"]["command"] and "--requirepass" in s["redis"]["command"]
    assert any(v.endswith(":/data") for v in s["redis"]["volumes"])
    for name in CHAIN + ["engine-gpu", "mqtt"]:
        assert "/healthz" in " ".join(s[name]["healthcheck"]["test"])
        assert "container_name" not in s[name]
    assert "ports" not in s["engine"]  # scalable: --scale engine=3
    gpu = s["engine-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["args"]["VARIANT"] == "gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name in ("mosquitto", "mqtt"):  # opt-in: `docker compose --profile mqtt up`
        assert s[name]["profiles"] == ["mqtt"]
    assert s["mqtt"]["command"][:2] == ["spacevllm", "mqtt"] and "mosquitto:1883" in s["mqtt"]["environment"]["SVL_MQTT_URL"]
    assert s["mqtt"]["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert "media-data:/data/media:ro" in s["mqtt"]["volumes"]  # snapshots, read-only
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in dockerfile and 'pip install "torch==${TORCH_VERSION}"' in dockerfile
    assert re.search(r'"torch==2\.13\.0"', (ROOT / "pyproject.toml").read_text()) and "ARG TORCH_VERSION=2.13.0" in dockerfile


class Chain:
    """The compose services as local processes."""

    def __init__(self, tmp: Path) -> None:
        self.spec = yaml.safe_load(COMPOSE.read_text())
        self.tmp = tmp
        self.redis_port = free_port()
        self.ports = {p: free_port() for p in (8080, 8081, 8082, 8083)}  # each container has its own network
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def map_ports(self, text: str) -> str:
        for inside, outside in self.ports.items():
            text = re.sub(rf"\b{inside}\b", str(outside), text)
        return text.replace("redis:6379", f"127.0.0.1:{self.redis_port}")

    def argv(self, name: str, args: list[str]) -> list[str]:
        svc = self.spec["services"][name]
        mounts = {}
        for v in svc.get("volumes", []):
            host, _, rest = v.partition(":")
            inside = rest.split(":")[0]
            if host.startswith("."):
                mounts[inside] = str((ROOT / host).resolve())
        out = []
        for a in args:
            a = self.map_ports(interpolate(str(a), ENV))
            out.append(mounts.get(a, a))
        if out[0] == "spacevllm":
            out = [sys.executable, "-m", "engine.app.cli", *out[1:]]
        elif out[0] == "python":
            out = [sys.executable, *out[1:]]
        return out

    def environment(self, name: str) -> dict[str, str]:
        env = {k: self.map_ports(interpolate(str(v), ENV)) for k, v in self.spec["services"][name].get("environment", {}).items()}
        if "SVL_DATA_DIR" in env:
            # services that mount the shared media volume (media, api) share one data dir here, like the volume there
            shared = any(str(v).startswith("media-data:") for v in self.spec["services"][name].get("volumes", []))
            env["SVL_DATA_DIR"] = str(self.tmp / ("data-shared" if shared else f"data-{name}"))
        return {"PATH": os.environ["PATH"], "HOME": str(self.tmp), "PYTHONPATH": str(ROOT), **env}

    def start(self, name: str) -> None:
        cmd = self.argv(name, self.spec["services"][name]["command"])
        if name == "redis":  # the image's redis-server; the network and the volume are the host's
            cmd = [redis_server_binary(prefer_system=True), *cmd[1:], "--port", str(self.redis_port), "--bind", "127.0.0.1",
                   "--dir", str(self.tmp)]
        self.logs[name] = self.tmp / f"{name}.log"
        self.procs[name] = subprocess.Popen(cmd, env=self.environment(name), cwd=self.tmp, stdout=self.logs[name].open("w"),
                                            stderr=subprocess.STDOUT)

    def healthy(self, name: str) -> bool:
        test = self.spec["services"][name]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            cli = Path(redis_server_binary(prefer_system=True)).with_name("redis-cli")
            line = self.map_ports(test[1]).replace("redis-cli", f"{cli} -p {self.redis_port}")
            r = subprocess.run(["sh", "-c", line], env=self.environment(name), capture_output=True, timeout=10)
        else:
            r = subprocess.run(self.argv(name, test[1:]), env=self.environment(name), capture_output=True, timeout=10)
        return r.returncode == 0

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def log(self, name: str) -> str:
        return self.logs[name].read_text() if name in self.logs else ""


def test_compose_services_when_run_as_local_processes_then_the_chain_produces_an_event(tmp_path):
    chain = Chain(tmp_path)
    try:
        # given the file's redis, healthy
        chain.start("redis")
        assert wait_until(lambda: chain.healthy("redis"), 15), chain.log("redis")
        # when ingest, engine and api start with their exact commands and environments
        for name in CHAIN:
            chain.start(name)
        api = f"http://127.0.0.1:{chain.ports[8080]}"
        headers = {"Authorization": f"Bearer {ENV['SVL_API_TOKEN']}"}

        def ready():
            try:
                return httpx.get(f"{api}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(ready, 90), "\n".join(f"--- {n}\n{chain.log(n)[-2000:]}" for n in CHAIN)
        # then every healthcheck passes
        for name in ["redis", *CHAIN]:
            assert chain.healthy(name), (name, chain.log(name)[-2000:])
        # and an event comes out of the chain, served by the API
        def an_event():
            r = httpx.get(f"{api}/v1/events", params={"limit": 5}, headers=headers, timeout=5)
            return r.status_code == 200 and r.json()["events"]

        events = wait_until(an_event, 120)
        assert events, "\n".join(f"--- {n}\n{chain.log(n)[-3000:]}" for n in CHAIN)
        assert events[0]["camera_id"] == "demo" and events[0]["query_id"] in {"red-circle", "yellow-triangle", "blue-square"}
        # and the media service made its snapshot, which the api serves from the shared media volume
        def a_snapshot():
            r = httpx.get(f"{api}/v1/events/{events[0]['event_id']}/snapshot.jpg", headers=headers, timeout=5)
            return r.status_code == 200 and r.content[:2] == b"\xff\xd8"

        assert wait_until(a_snapshot, 30), chain.log("media")[-3000:]
        cams = httpx.get(f"{api}/v1/cameras", headers=headers, timeout=5).json()
        assert cams[0]["id"] == "demo" and cams[0]["health"]["state"] == "running"
        # and the Redis password appears in no service's output
        for name in CHAIN:
            assert ENV["REDIS_PASSWORD"] not in chain.log(name) and ENV["SVL_API_TOKEN"] not in chain.log(name)
    finally:
        chain.stop()
