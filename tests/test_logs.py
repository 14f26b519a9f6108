"""uvicorn's loggers write through the project's formatter and scrubbing, however it started."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from uvicorn.config import LOGGING_CONFIG

from app import logs

NIK = "3201014501900001"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    loggers = {
        name: (lg.handlers[:], lg.propagate, lg.level, lg.filters[:])
        for name in logs.UVICORN_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, (handlers, propagate, lvl, filters) in loggers.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.propagate = propagate
        lg.setLevel(lvl)
        lg.filters[:] = filters


def _traceback_with_a_nik() -> None:
    try:
        raise ValueError(f"bad input {NIK}")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")


def _lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_uvicorns_default_config_is_taken_over(capsys: pytest.CaptureFixture[str]) -> None:
    """`uvicorn app.main:create_app --factory`: uvicorn configures its loggers first (their own
    handlers, no propagation); building the app routes them through ours."""
    logging.config.dictConfig(LOGGING_CONFIG)
    logs.configure("INFO", json=True)
    _traceback_with_a_nik()
    err = capsys.readouterr().err
    assert NIK not in err
    (line,) = _lines(err)
    assert line["logger"] == "uvicorn.error" and line["level"] == "error"
    assert "ValueError" in str(line["exception"])
    assert "#" * 16 in str(line["exception"])  # scrubbed, not dropped


@pytest.mark.usefixtures("restore_logging")
def test_serves_log_config(capsys: pytest.CaptureFixture[str]) -> None:
    """`tepat serve` passes uvicorn_log_config: uvicorn's lines are ours before the app loads."""
    logging.config.dictConfig(logs.uvicorn_log_config("INFO", json=True))
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    _traceback_with_a_nik()
    err = capsys.readouterr().err
    assert NIK not in err
    started, failed = _lines(err)
    assert started["event"] == "Started server process [42]"
    assert failed["logger"] == "uvicorn.error"


@pytest.mark.usefixtures("restore_logging")
def test_uvicorns_access_line_has_no_query(capsys: pytest.CaptureFixture[str]) -> None:
    logging.config.dictConfig(logs.uvicorn_log_config("INFO", json=True))
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)  # off by default: the app writes its own access line
    access.info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.7:5000", "GET", f"/v1/snapshots?nik={NIK}", "1.1", 200
    )
    err = capsys.readouterr().err
    (line,) = _lines(err)
    assert line["event"] == '- - "GET /v1/snapshots HTTP/1.1" 200'
    assert "10.0.0.7" not in err


def test_tepat_serve_passes_the_log_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from app.cli import app as cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setenv("TEPAT_LOG_JSON", "true")
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["serve", "--port", "8123"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    config = seen["log_config"]
    assert config == logs.uvicorn_log_config(get_settings().log_level, True)
    assert all(config["loggers"][name]["handlers"] == [] for name in logs.UVICORN_LOGGERS)
    assert seen["access_log"] is False


def test_the_demo_server_passes_the_log_config() -> None:
    from app.config import Settings
    from app.demo import server_config

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not served")

    config = server_config(app, Settings(log_json=True), "127.0.0.1", 8124)
    assert config.log_config == logs.uvicorn_log_config(Settings().log_level, True)
    assert config.access_log is False
