select
    id as issue_id,
    run_id,
    use_case_id,
    status,
    priority,
    type,
    created_at,
    updated_at,
    case when status in ('approved', 'rejected', 'closed') then updated_at end as closed_at
from {{ source('hr_ingest', 'run_issues') }}
