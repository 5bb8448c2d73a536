#!/usr/bin/env bash
# `make dbt`: the dbt project built and tested on the demo's data (sources' freshness too),
# then shown to fail on a broken row. Needs INGEST_TEST_DATABASE_URL (.ci/run sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${INGEST_TEST_DATABASE_URL:?set INGEST_TEST_DATABASE_URL to a PostgreSQL URL}"
DBT=(.venv-dbt/bin/dbt --no-use-colors)
DIRS=(--project-dir dbt --profiles-dir dbt)
export HR_INGEST_SCHEMA=hr_ingest_dbt_src DBT_SCHEMA=hr_ingest_dbt
# profiles.yml reads the connection from the environment: split the test database's URL.
eval "$(.venv/bin/python - <<'PY'
import os, shlex
from sqlalchemy.engine import make_url
u = make_url(os.environ["INGEST_TEST_DATABASE_URL"])
parts = {"DBT_HOST": u.host or "127.0.0.1", "DBT_PORT": u.port or 5432,
         "DBT_USER": u.username or "postgres", "DBT_PASSWORD": u.password or "",
         "DBT_DBNAME": u.database}
for key, value in parts.items():
    print(f"export {key}={shlex.quote(str(value))}")
PY
)"
sql() {
  .venv/bin/python -c 'import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1].replace("+asyncpg", ""))
    await conn.execute(sys.argv[2])
    await conn.close()
asyncio.run(main())' "$INGEST_TEST_DATABASE_URL" "$1"
}
drop_schemas() {
  sql "DROP SCHEMA IF EXISTS $HR_INGEST_SCHEMA CASCADE; DROP SCHEMA IF EXISTS $DBT_SCHEMA CASCADE"
}
trap drop_schemas EXIT
drop_schemas

echo "dbt: the demo's data into schema $HR_INGEST_SCHEMA"
DATABASE_URL="$INGEST_TEST_DATABASE_URL" INGEST_DB_SCHEMA="$HR_INGEST_SCHEMA" \
  .venv/bin/hr-ingest demo --runs 300 > /dev/null
"${DBT[@]}" build "${DIRS[@]}"
"${DBT[@]}" source freshness "${DIRS[@]}"

echo "dbt: a call whose run does not exist must fail the relationships test"
sql "INSERT INTO $HR_INGEST_SCHEMA.run_sessions (run_id, seq, id)
     VALUES ('00000000-0000-4000-8000-00000000dead', 0, 'orphan')"
if out=$("${DBT[@]}" build "${DIRS[@]}" --select stg_calls fct_calls 2>&1); then
  echo "$out"
  echo "dbt: FAILED: the broken row passed its tests" >&2
  exit 1
fi
grep -q "relationships_fct_calls_run_id" <<< "$out" || { echo "$out"; exit 1; }
echo "dbt: the broken row failed relationships_fct_calls_run_id, as it should"
