"""deploy/alerts.yml: valid rules (`promtool check rules`), each rule's behaviour pinned by series and expected
alerts (`promtool test rules tests/deploy/alerts_test.yml`), loaded by deploy/prometheus.yml, on exported metrics."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from api.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "alerts.yml"
ALERTS_TEST = Path(__file__).with_name("alerts_test.yml")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (apt-get install prometheus; .ci/run does)")
    return path


def test_alerts_when_checked_by_promtool_then_valid():
    r = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_alerts_when_unit_tested_by_promtool_then_every_case_passes():
    r = subprocess.run([promtool(), "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True, timeout=120,
                       cwd=ALERTS_TEST.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_alerts_when_read_then_every_rule_is_tested_and_uses_exported_metrics():
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    tested = {t["alertname"] for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for t in case["alert_rule_test"]}
    assert {r["alert"] for r in rules} == tested
    exported = {n for name, (kind, _, _) in METRICS.items()
                for n in ([name] if kind != "histogram" else [f"{name}_bucket", f"{name}_sum", f"{name}_count"])}
    used = {m for r in rules for m in re.findall(r"\bsvl_[a-z_]+", r["expr"])}
    assert used and used <= exported, used - exported
    assert all(r["labels"]["severity"] in ("page", "ticket") for r in rules)


def test_prometheus_config_when_read_then_loads_the_alert_rules():
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
