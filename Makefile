# Two set-up commands: `make demo` (the service on embedded defaults) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need Python 3.11 ($(PYTHON)): apt-get install python3.11 python3.11-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/spacevllm up

test: $(STAMP)
	@command -v redis-server >/dev/null || echo "note: redis-server not found; storage tests use the embedded Redis (apt-get install redis-server for Debian's)"
	@command -v docker-compose >/dev/null || echo "note: docker-compose not found; the compose-file validation test is skipped (apt-get install docker-compose; no Docker engine needed)"
	@command -v gst-launch-1.0 >/dev/null || echo "note: GStreamer not found; RTSP tests are skipped (apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly python3-gi)"
	@command -v chromedriver >/dev/null || echo "note: chromium/chromedriver not found; the dashboard's browser tests are skipped (apt-get install chromium chromium-driver)"
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || echo "note: mosquitto not found; the MQTT publisher's tests are skipped (apt-get install mosquitto mosquitto-clients)"
	@command -v promtool >/dev/null || echo "note: promtool/prometheus not found; the alert rules' tests and the live Prometheus test are skipped (apt-get install prometheus)"
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

bench: $(STAMP)
	$(BIN)/python bench/prefix_sharing.py

clean:
	rm -rf $(VENV)
