"""docker-compose.yml cannot run here (no Docker engine); its structure is checked instead."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_services_follow_the_security_and_port_defaults():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "ray-head", "ray-worker", "aggregator"} <= set(services)
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--requirepass" in redis_command
    assert all(port.startswith("127.0.0.1:") for name in ("redis", "ray-head") for port in services[name]["ports"])
    head = " ".join(services["ray-head"]["command"])
    assert "--port=6379" not in head and "--dashboard-port=8265" in head
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert (ROOT / "Dockerfile").exists() and services["ray-head"]["build"] == "."
