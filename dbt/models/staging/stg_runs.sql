-- Runs a worker has fetched (a run only listed has no body yet).
select
    id as run_id,
    org_id,
    use_case_id,
    version_id,
    status,
    annotation,
    "timestamp" as started_at,
    completed_at,
    data,
    fetched_at
from {{ source('hr_ingest', 'runs') }}
where fetched_at is not null
