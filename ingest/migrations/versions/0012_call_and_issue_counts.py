"""Daily counts of calls, tool calls and issues, rolled up at write time, and their views

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

As daily_run_counts (0011) for runs: statement triggers with transition tables add, per
statement that writes run_sessions or run_issues, one row per group it changed (+ as the rows
are now, - as they were); the worker compacts them (ingest.rollup); views sum them.
At a million runs, the calls, tool calls and issues charts read a few thousand rows instead of
a million sessions, 3 million tool calls or the issues joined to their runs.

- run_sessions.tools: [[tool name, calls], ...] of the session (normalize), so that tool
  counts come from the session rows without reading message_tool_calls.
- bi_tool_calls takes its use case from the call, as bi_calls does since 0009.
- run_issues.counted_use_case_id / counted_version_id: the use case and version bi_issues
  reports (the issue's own, else its run's), stored, because a cascaded delete of a run has
  emptied its runs row by the time the issues' counts are taken.

Sums of doubles are numeric: exact, so adding a row and taking it away leaves nothing. The
new columns of rows stored before are filled (with 0009's and bi_issues' own expressions).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLOSED = "('approved', 'rejected', 'closed')"  # as bi_issues (0002)
CONNECTED = "(s.sip_code IS NULL OR btrim(s.sip_code) ~ '^(2[0-9][0-9])?$')"  # as bi_calls
FIRST_WORD = 'EXTRACT(EPOCH FROM s.first_assistant_at - s."timestamp")'


class Rollup:
    """A counts table kept by triggers on `source`: keys and figures as SQL over its rows `s`."""

    def __init__(
        self,
        table: str,
        source: str,
        keys: dict[str, str],
        figures: dict[str, str],
        types: dict[str, sa.types.TypeEngine[object]],
        comments: dict[str, str],
        table_comment: str,
        extra_from: str = "",
    ) -> None:
        self.table, self.source, self.keys, self.figures = table, source, keys, figures
        self.types, self.comments, self.table_comment = types, comments, table_comment
        self.extra_from = extra_from

    def _part(self, sign: int, rows: str) -> str:
        keys = ", ".join(f"{sql} AS {name}" for name, sql in self.keys.items())
        figures = ", ".join(f"{sign} * ({sql}) AS {name}" for name, sql in self.figures.items())
        return f"SELECT {keys}, {figures} FROM {rows} AS s {self.extra_from}"

    def add(self, *parts: tuple[int, str]) -> str:
        keys, figures = ", ".join(self.keys), ", ".join(self.figures)
        union = " UNION ALL ".join(self._part(sign, rows) for sign, rows in parts)
        sums = ", ".join(f"coalesce(sum({f}), 0)" for f in self.figures)
        changed = " OR ".join(f"sum({f}) <> 0" for f in self.figures)
        return (
            f"INSERT INTO {self.table} ({keys}, {figures}) SELECT {keys}, {sums}"
            f" FROM ({union}) AS d GROUP BY {keys} HAVING {changed};"
        )

    @property
    def function(self) -> str:
        return f"{self.table}_add"

    def create(self) -> None:
        op.create_table(
            self.table,
            sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
            *(
                sa.Column(
                    name, self.types[name], nullable=name in self.keys, comment=self.comments[name]
                )
                for name in (*self.keys, *self.figures)
            ),
            sa.PrimaryKeyConstraint("id", name=f"pk_{self.table}"),
            comment=self.table_comment,
        )
        op.execute(f"COMMENT ON COLUMN {self.table}.id IS 'Row id.'")
        op.create_index(f"ix_{self.table}_day", self.table, ["day"])
        op.execute(
            f"""
CREATE FUNCTION {self.function}() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {self.add((1, "new_rows"))}
    ELSIF TG_OP = 'UPDATE' THEN
        {self.add((1, "new_rows"), (-1, "old_rows"))}
    ELSIF TG_OP = 'DELETE' THEN
        {self.add((-1, "old_rows"))}
    ELSE
        DELETE FROM {self.table};
    END IF;
    RETURN NULL;
END
$$"""
        )
        for name, when in self._triggers():
            op.execute(
                f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT EXECUTE FUNCTION"
                f" {self.function}()"
            )
        op.execute(self.add((1, self.source)))  # the rows stored so far

    def _triggers(self) -> list[tuple[str, str]]:
        t, src = self.table, self.source
        return [
            (f"{t}_insert", f"AFTER INSERT ON {src} REFERENCING NEW TABLE AS new_rows"),
            (
                f"{t}_update",
                f"AFTER UPDATE ON {src} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
            ),
            (f"{t}_delete", f"AFTER DELETE ON {src} REFERENCING OLD TABLE AS old_rows"),
            (f"{t}_truncate", f"AFTER TRUNCATE ON {src}"),
        ]

    def drop(self) -> None:
        for name, _ in reversed(self._triggers()):
            op.execute(f"DROP TRIGGER {name} ON {self.source}")
        op.execute(f"DROP FUNCTION {self.function}()")
        op.drop_table(self.table)


_DAY = "(s.\"timestamp\" AT TIME ZONE 'UTC')::date"
_N = sa.BigInteger()
_SUM = sa.Numeric()
_KEY_COMMENTS = {
    "day": "UTC day of the calls' timestamp.",
    "use_case_id": "Use case (use_cases.id).",
    "version_id": "Version (versions.id).",
}

CALLS = Rollup(
    "daily_call_counts",
    "run_sessions",
    keys={"day": _DAY, "use_case_id": "s.use_case_id", "version_id": "s.version_id"},
    figures={
        "calls": "1",
        "connected": f"{CONNECTED}::int",
        "duration_s": "s.duration::numeric",
        "durations": "(s.duration IS NOT NULL)::int",
        "talk_s": f"CASE WHEN {CONNECTED} THEN s.duration::numeric END",
        "talks": f"({CONNECTED} AND s.duration IS NOT NULL)::int",
        "first_word_s": FIRST_WORD,
        "first_words": f"({FIRST_WORD} IS NOT NULL)::int",
        "latency_llm_p95_ms": "s.latency_llm_p95::numeric",
        "latency_llm_p95s": "(s.latency_llm_p95 IS NOT NULL)::int",
        "latency_turn_p95_ms": "s.latency_turn_p95::numeric",
        "latency_turn_p95s": "(s.latency_turn_p95 IS NOT NULL)::int",
        "messages": "s.messages",
        "tool_calls": "s.tool_calls",
        "interruptions": "s.interruptions",
    },
    types={
        "day": sa.Date(),
        "use_case_id": sa.UUID(),
        "version_id": sa.UUID(),
        **{
            f: _SUM
            for f in (
                "duration_s",
                "talk_s",
                "first_word_s",
                "latency_llm_p95_ms",
                "latency_turn_p95_ms",
            )
        },
        **{
            f: _N
            for f in (
                "calls",
                "connected",
                "durations",
                "talks",
                "first_words",
                "latency_llm_p95s",
                "latency_turn_p95s",
                "messages",
                "tool_calls",
                "interruptions",
            )
        },
    },
    comments={
        **_KEY_COMMENTS,
        "calls": "Calls added (negative: taken away).",
        "connected": "Of them connected.",
        "duration_s": "Sum of their durations, as sent (seconds in practice).",
        "durations": "How many have a duration.",
        "talk_s": "Sum of the durations of the connected ones.",
        "talks": "How many connected ones have a duration.",
        "first_word_s": "Sum of their times to first word, seconds.",
        "first_words": "How many have one.",
        "latency_llm_p95_ms": "Sum of their LLM latency p95s, ms.",
        "latency_llm_p95s": "How many have one.",
        "latency_turn_p95_ms": "Sum of their turn latency p95s, ms.",
        "latency_turn_p95s": "How many have one.",
        "messages": "Sum of their turns.",
        "tool_calls": "Sum of their tool calls.",
        "interruptions": "Sum of their interruptions.",
    },
    table_comment="What bi_daily_calls sums: changes to run_sessions per UTC day, use case and"
    " version, written by triggers and compacted by the worker. Read bi_daily_calls instead.",
)

TOOLS = Rollup(
    "daily_tool_counts",
    "run_sessions",
    keys={"day": _DAY, "use_case_id": "s.use_case_id", "tool_name": "t.value->>0"},
    figures={"tool_calls": "(t.value->>1)::bigint", "calls_using_it": "1"},
    types={
        "day": sa.Date(),
        "use_case_id": sa.UUID(),
        "tool_name": sa.Text(),
        "tool_calls": _N,
        "calls_using_it": _N,
    },
    comments={
        "day": "UTC day of the calls' timestamp.",
        "use_case_id": "Use case (use_cases.id).",
        "tool_name": "Tool (function) name.",
        "tool_calls": "Times it was called.",
        "calls_using_it": "Calls (sessions) that called it.",
    },
    table_comment="What bi_daily_tool_calls sums: the agent's tool calls per UTC day of their"
    " call, use case and tool, written by triggers on run_sessions. Read bi_daily_tool_calls"
    " instead.",
    extra_from="CROSS JOIN LATERAL jsonb_array_elements(s.tools) AS t",
)

_CLOSE_S = "EXTRACT(EPOCH FROM s.updated_at - s.created_at)"
ISSUES = Rollup(
    "daily_issue_counts",
    "run_issues",
    keys={
        "day": "(s.created_at AT TIME ZONE 'UTC')::date",
        "use_case_id": "s.counted_use_case_id",
        "version_id": "s.counted_version_id",
        "status": "s.status",
    },
    figures={
        "issues": "1",
        "time_to_close_s": f"CASE WHEN s.status IN {CLOSED} THEN {_CLOSE_S} END",
        "time_to_close_n": f"(s.status IN {CLOSED} AND {_CLOSE_S} IS NOT NULL)::int",
    },
    types={
        "day": sa.Date(),
        "use_case_id": sa.UUID(),
        "version_id": sa.UUID(),
        "status": sa.Text(),
        "issues": _N,
        "time_to_close_s": _SUM,
        "time_to_close_n": _N,
    },
    comments={
        "day": "UTC day the issues were created.",
        "use_case_id": "Use case they are counted under (run_issues.counted_use_case_id).",
        "version_id": "Version they are counted under (run_issues.counted_version_id).",
        "status": "Issue status.",
        "issues": "Issues added (negative: taken away).",
        "time_to_close_s": "Sum of created_at to updated_at of the settled ones, seconds.",
        "time_to_close_n": "How many settled ones have both times.",
    },
    table_comment="What bi_daily_issues sums: changes to run_issues per UTC day created, use"
    " case, version and status, written by triggers. Read bi_daily_issues instead.",
)

_NAMES = """
LEFT JOIN use_cases AS uc ON uc.id = d.use_case_id"""
_VERSION_NAMES = """
LEFT JOIN versions AS v ON v.id = d.version_id"""

_CALL_SUMS = ", ".join(
    f"sum(d.{f})::{'bigint' if isinstance(CALLS.types[f], sa.BigInteger) else 'double precision'}"
    f" AS {f}"
    for f in CALLS.figures
)
BI_DAILY_CALLS = f"""
CREATE VIEW bi_daily_calls AS
SELECT
    d.day, d.use_case_id, uc.name AS use_case_name,
    d.version_id, v.name AS version_name, v.version_number, v.environment,
    {_CALL_SUMS}
FROM daily_call_counts AS d{_NAMES}{_VERSION_NAMES}
GROUP BY d.day, d.use_case_id, uc.name, d.version_id, v.name, v.version_number, v.environment
HAVING sum(d.calls) <> 0
"""

BI_DAILY_TOOL_CALLS = f"""
CREATE VIEW bi_daily_tool_calls AS
SELECT
    d.day, d.use_case_id, uc.name AS use_case_name, d.tool_name,
    sum(d.tool_calls)::bigint AS tool_calls,
    sum(d.calls_using_it)::bigint AS calls_using_it
FROM daily_tool_counts AS d{_NAMES}
GROUP BY d.day, d.use_case_id, uc.name, d.tool_name
HAVING sum(d.calls_using_it) <> 0
"""

BI_DAILY_ISSUES = f"""
CREATE VIEW bi_daily_issues AS
SELECT
    d.day, d.use_case_id, uc.name AS use_case_name,
    d.version_id, v.name AS version_name, v.version_number,
    d.status, d.status IN {CLOSED} AS settled,
    sum(d.issues)::bigint AS issues,
    sum(d.time_to_close_s)::double precision AS time_to_close_s,
    sum(d.time_to_close_n)::bigint AS time_to_close_n
FROM daily_issue_counts AS d{_NAMES}{_VERSION_NAMES}
GROUP BY d.day, d.use_case_id, uc.name, d.version_id, v.name, v.version_number, d.status
HAVING sum(d.issues) <> 0
"""

# 0004's bi_tool_calls with its use case from the call, as bi_calls since 0009 and the daily
# counts: no join to runs.
BI_TOOL_CALLS = """
CREATE OR REPLACE VIEW bi_tool_calls AS
SELECT
    tc.run_id,
    tc.session_seq,
    tc.message_seq,
    tc.seq AS tool_call_seq,
    s.use_case_id,
    uc.name AS use_case_name,
    tc.name AS tool_name,
    tc.arguments,
    sm."timestamp",
    s."timestamp" AS session_timestamp
FROM message_tool_calls AS tc
LEFT JOIN session_messages AS sm
    ON sm.run_id = tc.run_id AND sm.session_seq = tc.session_seq AND sm.seq = tc.message_seq
LEFT JOIN run_sessions AS s ON s.run_id = tc.run_id AND s.seq = tc.session_seq
LEFT JOIN use_cases AS uc ON uc.id = s.use_case_id
"""

VIEWS = (
    ("bi_daily_calls", BI_DAILY_CALLS),
    ("bi_daily_tool_calls", BI_DAILY_TOOL_CALLS),
    ("bi_daily_issues", BI_DAILY_ISSUES),
)
VIEW_COMMENTS = {
    "bi_daily_calls": "Calls per UTC day, use case and version: counts and sums (sum them"
    " across days; divide a sum by its count for a mean: talk_s / talks).",
    "bi_daily_tool_calls": "Tool calls per UTC day of their call, use case and tool.",
    "bi_daily_issues": "Issues per UTC day created, use case, version and status, with the"
    " time settled ones took (time_to_close_s / time_to_close_n: mean seconds).",
}

_NAME_COMMENTS = {
    "use_case_name": "Use case name (use_cases.name).",
    "version_name": "Version name (versions.name).",
    "version_number": "Version number within the use case.",
    "environment": "staging or production (the version's).",
}
VIEW_COLUMNS = {
    "bi_daily_calls": {**CALLS.comments, **_NAME_COMMENTS},
    "bi_daily_tool_calls": {**TOOLS.comments, **_NAME_COMMENTS},
    "bi_daily_issues": {
        **ISSUES.comments,
        **_NAME_COMMENTS,
        "settled": "Whether the status settles an issue (approved, rejected, closed).",
    },
}


def _comment(target: str, text: str) -> str:
    return f"COMMENT ON {target} IS '" + text.replace("'", "''") + "';"


# The facts of rows stored before: bi_issues' own coalesce, and the tools of each session.
_FILL = (
    """
UPDATE run_issues AS i SET
    counted_use_case_id = coalesce(i.use_case_id, r.use_case_id),
    counted_version_id = coalesce(i.run_version_id, r.version_id)
FROM runs AS r WHERE r.id = i.run_id
""",
    """
UPDATE run_sessions AS s SET tools = t.tools
FROM (
    SELECT run_id, session_seq,
        jsonb_agg(jsonb_build_array(name, n) ORDER BY name COLLATE "C" NULLS FIRST) AS tools
    FROM (
        SELECT run_id, session_seq, name, count(*) AS n FROM message_tool_calls
        GROUP BY run_id, session_seq, name
    ) AS c
    GROUP BY run_id, session_seq
) AS t
WHERE t.run_id = s.run_id AND t.session_seq = s.seq
""",
)


# The compaction of every daily counts table (ingest.rollup calls it): the rows a compaction
# sees replaced by their sums, in one statement per table. As the owner, like the triggers, so
# that a worker role needs no grant on the counts tables.
_COUNTS_KEYS = {
    "daily_run_counts": ("day", "use_case_id", "status", "annotation"),
    "daily_call_counts": tuple(CALLS.keys),
    "daily_tool_counts": tuple(TOOLS.keys),
    "daily_issue_counts": tuple(ISSUES.keys),
}
_COUNTS_FIGURES = {
    "daily_run_counts": (
        "runs",
        "duration_us",
        "durations",
        "runs_with_issues",
        "issues",
        "events",
    ),
    "daily_call_counts": tuple(CALLS.figures),
    "daily_tool_counts": tuple(TOOLS.figures),
    "daily_issue_counts": tuple(ISSUES.figures),
}


def _compaction(table: str) -> str:
    keys, figures = ", ".join(_COUNTS_KEYS[table]), _COUNTS_FIGURES[table]
    return (
        f"WITH gone AS (DELETE FROM {table} RETURNING *)"
        f" INSERT INTO {table} ({keys}, {', '.join(figures)})"
        f" SELECT {keys}, {', '.join(f'sum({f})' for f in figures)} FROM gone"
        f" GROUP BY {keys} HAVING {' OR '.join(f'sum({f}) <> 0' for f in figures)};"
    )


COMPACT = f"""
CREATE FUNCTION compact_daily_counts() RETURNS bigint LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    {" ".join(_compaction(t) for t in _COUNTS_KEYS)}
    RETURN {" + ".join(f"(SELECT count(*) FROM {t})" for t in _COUNTS_KEYS)};
END
$$"""


def upgrade() -> None:
    op.add_column(
        "run_sessions",
        sa.Column(
            "tools",
            sa.dialects.postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'[]'::jsonb"),
            comment="Its tool calls by tool name: a JSON array of [name, calls].",
        ),
    )
    op.add_column(
        "run_issues",
        sa.Column(
            "counted_use_case_id",
            sa.UUID(),
            comment="Use case dashboards count it under: its own, else its run's.",
        ),
    )
    op.add_column(
        "run_issues",
        sa.Column(
            "counted_version_id",
            sa.UUID(),
            comment="Version dashboards count it under: run_version_id, else its run's.",
        ),
    )
    for sql in _FILL:
        op.execute(sql)
    for rollup in (CALLS, TOOLS, ISSUES):
        rollup.create()
    op.execute(COMPACT)
    op.execute(
        "COMMENT ON FUNCTION compact_daily_counts() IS 'Replaces the rows of the daily_*_counts"
        " tables by their sums per group; returns the rows left. Run by the worker every"
        " minute.'"
    )
    op.execute(BI_TOOL_CALLS)
    comments = []
    for name, sql in VIEWS:
        op.execute(sql)
        comments.append(_comment(f"VIEW {name}", VIEW_COMMENTS[name]))
        columns = op.get_bind().execute(
            sa.text(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:v AS regclass)"
                " AND attnum > 0"
            ),
            {"v": name},
        )
        comments += [
            _comment(f"COLUMN {name}.{column}", VIEW_COLUMNS[name][column]) for (column,) in columns
        ]
    # One round trip (a DO block): migrations run for every test schema.
    op.execute("DO $c$ BEGIN " + " ".join(comments) + " END $c$")


def downgrade() -> None:
    for name, _ in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    script = op.get_context().script
    assert script is not None
    v0004 = script.get_revision("0004").module.BI_TOOL_CALLS
    op.execute(v0004.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
    op.execute("DROP FUNCTION compact_daily_counts()")
    for rollup in (ISSUES, TOOLS, CALLS):
        rollup.drop()
    op.drop_column("run_issues", "counted_version_id")
    op.drop_column("run_issues", "counted_use_case_id")
    op.drop_column("run_sessions", "tools")
