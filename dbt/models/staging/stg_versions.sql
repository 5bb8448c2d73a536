select
    id as version_id,
    use_case_id,
    version_number,
    name as version_name,
    environment,
    is_published,
    published_at
from {{ source('hr_ingest', 'versions') }}
