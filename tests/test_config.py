from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ingest.config import ConfigError, Secret, load_settings
from tests.helpers import run_cli


def test_defaults_match_the_spec() -> None:
    s = load_settings(environ={}, env_file=None)
    assert s.database_url is None
    assert s.db_schema == "happyrobot"
    assert s.base_url == "https://platform.happyrobot.ai/api/v1"
    assert (s.rate_limit, s.concurrency, s.max_attempts) == (10.0, 16, 8)
    assert s.api_key is None and s.org_id is None


def test_flags_beat_environment_which_beats_dotenv(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("INGEST_RATE_LIMIT=3\nINGEST_CONCURRENCY=4\nINGEST_MAX_ATTEMPTS=5\n")
    s = load_settings(
        flags={"rate_limit": "7"},
        environ={"INGEST_CONCURRENCY": "9"},
        env_file=env_file,
    )
    assert (s.rate_limit, s.concurrency, s.max_attempts) == (7.0, 9, 5)


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("DATABASE_URL", "not a url at all", "DATABASE_URL"),
        ("DATABASE_URL", "mysql://u@h/db", "not PostgreSQL"),
        ("DATABASE_URL", "postgresql://u@h", "names no database"),
        ("DATABASE_URL", "postgresql://u@h/db?sslmode=verify", "sslmode 'verify' is not one of"),
        ("DATABASE_URL", "postgresql://u@h/db?sslmode=require&sslmode=disable", "given 2 times"),
        ("DATABASE_URL", "postgresql://u@h/db?sslrootcert=/no/ca.pem", "sslrootcert file"),
        ("DATABASE_URL", "postgresql://u@h/db?sslmode=require&sslkey=/no/k", "sslkey file"),
        ("INGEST_RATE_LIMIT", "-1", "greater than 0"),
        ("INGEST_RATE_LIMIT", "0", "greater than 0"),
        ("INGEST_RATE_LIMIT", "fast", "not a number"),
        ("INGEST_RATE_LIMIT", "nan", "greater than 0"),
        ("INGEST_CONCURRENCY", "1.5", "not a number"),
        ("INGEST_DB_SCHEMA", "Robert'); DROP", "identifier"),
        ("HAPPYROBOT_ORG_ID", "../x", "not a UUID"),
        ("HAPPYROBOT_BASE_URL", "ftp://x", "http(s)"),
        ("INGEST_LOG_FORMAT", "xml", "json"),
    ],
)
def test_bad_values_name_the_variable(var: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={var: value}, env_file=None)
    assert info.value.variable == var
    assert fragment in str(info.value)


def test_secrets_never_show_in_repr() -> None:
    s = load_settings(
        environ={
            "HAPPYROBOT_API_KEY": "sk-very-secret-key",
            "DATABASE_URL": "postgresql://bob:hunter2pass@db.example/prod",
        },
        env_file=None,
    )
    assert isinstance(s.api_key, Secret)
    text = repr(s) + str(s) + repr(s.api_key) + s.database_url_redacted
    assert "sk-very-secret-key" not in text
    assert "hunter2pass" not in text
    assert "bob" in s.database_url_redacted


@pytest.mark.parametrize(
    ("args", "env_extra", "fragment"),
    [
        (["status"], {"DATABASE_URL": "postgresql://u:topsecret@/"}, "DATABASE_URL"),
        (["status"], {"INGEST_RATE_LIMIT": "-5"}, "INGEST_RATE_LIMIT"),
        (["status", "--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        # A flag's bad value is named by the flag, the environment's by its variable.
        (["--rate-limit", "-1", "status"], {}, "--rate-limit: must be greater than 0"),
        (["--database-url", "mysql://u:topsecret@h/db", "status"], {}, "--database-url: scheme"),
        (["worker", "--metrics-port", "x"], {}, "--metrics-port: 'x' is not a port number"),
        (["worker"], {"INGEST_BATCH_SIZE": "0"}, "INGEST_BATCH_SIZE: must be greater than 0"),
        (["status"], {"INGEST_LOG_LEVEL": "loud"}, "INGEST_LOG_LEVEL: must be one of"),
        (
            ["status"],
            {"DATABASE_URL": "postgresql://u:topsecret@h/db?sslmode=verify-full&sslrootcert=ca"},
            "DATABASE_URL: sslrootcert file 'ca' does not exist or cannot be read",
        ),
    ],
)
def test_cli_bad_configuration_exits_2_with_one_line(
    args: list[str], env_extra: dict[str, str], fragment: str, tmp_path: Path
) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "HAPPYROBOT_"))}
    env.pop("DATABASE_URL", None)
    env.update(env_extra)
    env["INGEST_DATA_DIR"] = str(tmp_path / "never-started")
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "topsecret" not in result.stderr
    # Rejected before any work: the embedded server was never started.
    assert not (tmp_path / "never-started").exists()


def test_every_setting_is_a_variable_and_a_flag_declared_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ingest import cli
    from ingest.config import DECLARED

    assert len({d.var for d in DECLARED}) == len({d.flag for d in DECLARED}) == len(DECLARED)
    helps = {}
    commands = ("status", "worker", "webhook")
    for command in commands:
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        helps[command] = capsys.readouterr().out
    for d in DECLARED:
        # A command's own setting is a flag of that command alone; the others, of every one.
        shown_in = [c for c, text in helps.items() if d.flag in text and d.var in text]
        assert shown_in == (list(d.commands) or list(commands)), d


def test_help_shows_the_declared_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingest import cli
    from ingest.config import DECLARED

    monkeypatch.setenv("COLUMNS", "200")  # argparse's width: one line per flag
    with pytest.raises(SystemExit):
        cli.main(["worker", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # Each flag's help: from "--flag VAR " (the usage line has "--flag VAR]") to the next flag.
    helps = {
        d.flag: text.split(f"{d.flag} {d.var} ", 1)[1].split(" --", 1)[0]
        for d in DECLARED
        if d.commands in ((), ("worker",))
    }
    defaults = {
        "--schema": "happyrobot",
        "--base-url": "https://platform.happyrobot.ai/api/v1",
        "--rate-limit": "10",
        "--concurrency": "16",
        "--max-attempts": "8",
        "--log-level": "info",
        "--lease-seconds": "120",
        "--batch-size": "200",
        "--metrics-host": "0.0.0.0",
    }
    for flag, help_ in helps.items():
        if flag in defaults:
            assert help_.endswith(f"(default {defaults[flag]})"), help_
        else:  # unset or computed: the help says what happens then
            assert "(default " not in help_, help_


def test_the_worker_settings_defaults_are_the_worker_options_defaults() -> None:
    from ingest.worker import WorkerOptions

    settings, options = load_settings(environ={}, env_file=None), WorkerOptions()
    assert (settings.lease_seconds, settings.batch_size) == (options.lease_s, options.batch_size)


@pytest.mark.parametrize(
    ("var", "value", "field", "expected"),
    [
        ("INGEST_LOG_LEVEL", "WARNING", "log_level", "warning"),
        ("INGEST_LEASE_SECONDS", "45", "lease_seconds", 45.0),
        ("INGEST_BATCH_SIZE", "50", "batch_size", 50),
        ("INGEST_SYNC_EVERY", "90s", "sync_every", timedelta(seconds=90)),
        ("INGEST_METRICS_PORT", "9100", "metrics_port", 9100),
        ("INGEST_METRICS_HOST", "127.0.0.1", "metrics_host", "127.0.0.1"),
    ],
)
def test_worker_and_logging_settings_come_from_the_environment_too(
    var: str, value: str, field: str, expected: object
) -> None:
    settings = load_settings(environ={var: value}, env_file=None)
    assert getattr(settings, field) == expected


def test_the_readme_lists_every_variable() -> None:
    from ingest.config import DECLARED

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [d.var for d in DECLARED if f"`{d.var}`" not in readme]
    assert missing == []
