-- One call or chat: a session, with its turns counted.
select
    s.run_id,
    s.seq as session_seq,
    s.id as session_id,
    s."timestamp" as started_at,
    s.duration,
    s.sip_code,
    s.sip_code is null or s.sip_code = '' or s.sip_code like '2%' as connected,
    count(m.seq) as messages,
    count(m.seq) filter (where m.role = 'assistant') as assistant_turns,
    count(m.seq) filter (where m.is_interrupted) as interruptions
from {{ source('hr_ingest', 'run_sessions') }} as s
left join {{ source('hr_ingest', 'session_messages') }} as m
    on m.run_id = s.run_id and m.session_seq = s.seq
group by 1, 2, 3, 4, 5, 6
