select
    i.*,
    extract(epoch from i.closed_at - i.created_at) as time_to_close_s
from {{ ref('stg_issues') }} as i
