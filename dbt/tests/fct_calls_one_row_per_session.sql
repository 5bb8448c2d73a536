-- A session is (run_id, session_seq): more than one row for it means a join fanned out.
select run_id, session_seq, count(*) as rows
from {{ ref('fct_calls') }}
group by 1, 2
having count(*) > 1
