-- One row per fetched run, with its use case and version by name and its calls summed up.
select
    r.run_id,
    r.org_id,
    r.use_case_id,
    uc.use_case_name,
    r.version_id,
    v.version_name,
    v.version_number,
    r.status,
    r.annotation,
    r.started_at,
    r.completed_at,
    r.data,
    count(c.session_seq) as calls,
    count(c.session_seq) filter (where c.connected) as connected_calls,
    sum(c.duration) as call_duration
from {{ ref('stg_runs') }} as r
left join {{ ref('stg_use_cases') }} as uc on uc.use_case_id = r.use_case_id
left join {{ ref('stg_versions') }} as v on v.version_id = r.version_id
left join {{ ref('stg_calls') }} as c on c.run_id = r.run_id
group by 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
