select
    id as use_case_id,
    name as use_case_name,
    slug,
    data_retention_days,
    run_columns
from {{ source('hr_ingest', 'use_cases') }}
