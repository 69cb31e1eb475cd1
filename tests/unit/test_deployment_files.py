"""docker-compose.yml, Dockerfile and .env.example agree with each other and with the code.

No Docker engine runs here, so this checks their coherence, not a running stack.
"""

import re
from pathlib import Path

import yaml

from webapp.launcher import main as launcher_main

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_the_whole_stack():
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "beat", "idle"}
    for role in ["migrate", "web", "worker", "beat", "idle"]:
        service = services[role]
        assert service["build"] == "."
        assert service["env_file"] == ".env"
        assert service["command"] == ["python", "-m", "webapp.launcher", role]
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["DATABASE_URL"].startswith("postgres://satchel:")
    for role in ["web", "worker", "beat", "idle"]:
        condition = services[role]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_every_variable_compose_reads_is_documented():
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    documented = set(re.findall(r"^(\w+)=", (REPO / ".env.example").read_text(), re.M))
    assert used - {"PORT"} <= documented
    assert {"SECRET_KEY", "SATCHEL_ENCRYPTION_KEY", "ALLOWED_HOSTS"} <= documented


def test_dockerfile_copies_what_the_app_needs():
    dockerfile = (REPO / "Dockerfile").read_text()
    for path in ["webapp/", "mailcore/", "ftpcore/", "templates/", "static/", "manage.py"]:
        assert f"COPY {path}" in dockerfile
    assert 'CMD ["python", "-m", "webapp.launcher", "web"]' in dockerfile


def test_launcher_rejects_an_unknown_role(capsys):
    assert launcher_main(["webserver"]) == 2
    assert "usage: python -m webapp.launcher" in capsys.readouterr().err
