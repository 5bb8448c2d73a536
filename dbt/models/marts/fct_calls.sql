select
    c.*,
    r.use_case_id,
    r.version_id
from {{ ref('stg_calls') }} as c
left join {{ ref('stg_runs') }} as r on r.run_id = c.run_id
