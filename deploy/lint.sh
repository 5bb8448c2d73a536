#!/usr/bin/env bash
# `make lint-deploy`: the deploy/ checks that need tools beyond the Python venv.
# tests/test_deploy.py already runs the venv's (hadolint, compose and Kubernetes schemas);
# this adds the Docker Compose CLI, kubectl kustomize and systemd-analyze where installed.
# A missing tool is reported as SKIPPED, not failed; STRICT=1 makes it a failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
BIN=${BIN:-.venv/bin}
failed=0
skipped=0

run() { # name, command...
  local name=$1
  shift
  if "$@"; then echo "ok      $name"; else echo "FAILED  $name"; failed=1; fi
}
skip() {
  echo "SKIPPED $1"
  skipped=1
}

run "hadolint deploy/Dockerfile" "$BIN/hadolint" deploy/Dockerfile

# The compose CLI resolves interpolation, merges anchors and checks its own schema.
compose_env=(env POSTGRES_PASSWORD=lint HR_INGEST_ENV_FILE=hr-ingest.env.example)
if docker compose version >/dev/null 2>&1; then
  run "docker compose config" "${compose_env[@]}" \
    docker compose -f deploy/docker-compose.yml config --quiet
elif command -v docker-compose >/dev/null; then
  # Compose v1 (Debian's docker-compose) predates the top-level `name:`; drop that line.
  tmp=$(mktemp deploy/.compose-v1-XXXXXX.yml)
  grep -v '^name:' deploy/docker-compose.yml >"$tmp"
  run "docker-compose (v1) config" "${compose_env[@]}" \
    docker-compose -f "$tmp" --project-directory deploy config --quiet
  rm -f "$tmp"
else
  skip "docker compose config: no compose CLI (apt-get install docker-compose)"
fi

if command -v kubectl >/dev/null; then
  rendered=$(mktemp)
  run "kubectl kustomize deploy/k8s" sh -c "kubectl kustomize deploy/k8s >'$rendered'"
  for v in 1.30.0 1.37.0; do
    run "kubernetes-validate --strict (k8s $v) on the rendered kustomization" \
      "$BIN/kubernetes-validate" --strict --quiet -k "$v" "$rendered"
  done
  rm -f "$rendered"
else
  skip "kubectl kustomize: kubectl not installed"
fi

if command -v systemd-analyze >/dev/null; then
  # verify also checks that ExecStart exists; /opt/hr-ingest is not installed here.
  out=$(cd deploy/systemd && systemd-analyze verify --man=no \
    hr-ingest-migrate.service hr-ingest-worker@9100.service hr-ingest.target \
    hr-ingest-sync.service hr-ingest-sync.timer hr-ingest-webhook.service 2>&1 |
    grep -v 'Command /opt/hr-ingest/.venv/bin/hr-ingest is not executable')
  if [ -z "$out" ]; then echo "ok      systemd-analyze verify"; else
    echo "$out"
    echo "FAILED  systemd-analyze verify"
    failed=1
  fi
else
  skip "systemd-analyze verify: systemd not installed"
fi

if [ "$failed" = 1 ]; then exit 1; fi
if [ "$skipped" = 1 ] && [ "${STRICT:-0}" = 1 ]; then exit 1; fi
exit 0
