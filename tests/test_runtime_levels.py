"""Levels changed at run time (docs/sampling.md): `fapilog.set_level` with a ttl and its
audit records, the admin route (token, 401, constant-time comparison), and the debug
header that exports one request's DEBUG lines."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fapilog
from fapilog import configure_logging, get_logger
from sampling_support import lines, make_app, requests_in, serve, steps_in

TOKEN = "s3cret-admin-token-0123456789"
AUDIT = "fapilog.level.changed"


def audits(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in found if line["message"] == AUDIT]


def wait_for(path: Path, what: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """The lines once `what(lines)` holds (waits on the file, not on a clock)."""
    deadline = time.monotonic() + timeout
    woken = threading.Event()
    while True:
        found = lines(path)
        if what(found) or time.monotonic() > deadline:
            return found
        woken.wait(0.05)


def test_set_level_for_a_logger_with_a_ttl_reverts_and_writes_two_audit_records(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)})
    billing, other = get_logger("billing"), get_logger("shipping")
    billing.debug("before")
    fapilog.set_level("debug", logger="billing", ttl=2)
    started = time.monotonic()
    billing.debug("during", n=1)
    logging.getLogger("billing.stripe").debug("stdlib during")
    other.debug("other logger")
    found = wait_for(path, lambda found: len(audits(found)) == 2)
    assert time.monotonic() - started >= 2
    billing.debug("after")
    found = lines(path)
    messages = [line["message"] for line in found]
    assert "during" in messages and "stdlib during" in messages
    assert "before" not in messages and "after" not in messages
    assert "other logger" not in messages
    first, second = audits(found)
    assert first["level.logger"] == "billing" and first["level.to"] == "DEBUG"
    assert first["level.from"] == "INFO" and first["level.ttl"] == 2.0
    assert first["level.reason"] == "set"
    assert second["level.reason"] == "expired"
    assert second["level.from"] == "DEBUG" and second["level.to"] == "INFO"


def test_set_level_globally_and_bad_arguments(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)})
    fapilog.set_level("warning", who="ops")
    get_logger("x").info("hidden")
    get_logger("x").warning("shown")
    found = lines(path)
    assert [line["message"] for line in found] == [AUDIT, "shown"]
    assert found[0]["level.who"] == "ops" and found[0]["level.logger"] == ""
    for bad in ({"level": "loud"}, {"level": "info", "ttl": -1}, {"level": "info", "ttl": "x"}):
        with pytest.raises(ValueError):
            fapilog.set_level(**bad)


def test_a_new_change_outlives_an_older_ttl(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    configure_logging(exporters=["file"], file={"path": str(path)})
    fapilog.set_level("debug", logger="svc", ttl=0.2)
    fapilog.set_level("debug", logger="svc")  # for good
    found = wait_for(path, lambda found: False, timeout=0.5)
    get_logger("svc").debug("still debug")
    found = lines(path)
    assert [line["level.reason"] for line in audits(found)] == ["set", "set"]
    assert found[-1]["message"] == "still debug"


# -- the admin route ---------------------------------------------------------------------------


def admin_app(tmp_path: Path, token: str | None = TOKEN) -> tuple[Any, Path]:
    path = tmp_path / "app.log"
    app = make_app()
    configure_logging(
        app=app,
        exporters=["file"],
        file={"path": str(path)},
        admin={"token": token},
        request={"buffer": {"enabled": True}},
    )
    return app, path


def call(app: Any, method: str, body: Any = None, token: str | None = TOKEN) -> Any:
    import asyncio

    import httpx

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(
                method,
                "/_fapilog/levels",
                headers=headers,
                content=body if isinstance(body, str) else json.dumps(body),
            )

    return asyncio.run(main())


def test_the_route_changes_a_level_with_the_token(tmp_path: Path) -> None:
    app, path = admin_app(tmp_path)
    response = call(app, "GET")
    assert response.status_code == 200 and response.json()["level"] == "INFO"
    response = call(app, "PUT", {"logger": "billing", "level": "debug", "ttl": 30})
    assert response.status_code == 200, response.text
    assert response.json()["loggers"] == {"billing": "DEBUG"}
    assert response.json()["changes"][0]["logger"] == "billing"
    get_logger("billing").debug("now visible")
    found = lines(path)
    (audit,) = audits(found)
    assert "via /_fapilog/levels" in audit["level.who"]
    assert "now visible" in [line["message"] for line in found]


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token", TOKEN + "x", ""])
def test_the_route_without_a_valid_token_answers_401_and_changes_nothing(
    tmp_path: Path, token: str | None
) -> None:
    app, path = admin_app(tmp_path)
    for method in ("GET", "PUT"):
        response = call(app, method, {"logger": None, "level": "debug"}, token=token)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert fapilog.lifecycle.levels.current_levels()["level"] == "INFO"
    assert audits(lines(path)) == []


def test_the_route_is_never_mounted_without_a_token(tmp_path: Path) -> None:
    app, _ = admin_app(tmp_path, token=None)
    assert call(app, "GET").status_code == 404
    assert call(app, "PUT", {"level": "debug"}).status_code == 404  # the app's own answer


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("not json", "not JSON"),
        ({"logger": "x"}, "level"),
        ({"level": "loud"}, "unknown level"),
        ({"level": "debug", "ttl": 0}, "ttl"),
        ({"level": "debug", "extra": 1}, "unknown keys"),
    ],
)
def test_a_bad_body_is_a_400_saying_what_is_wrong(tmp_path: Path, body: Any, expected: str) -> None:
    app, _ = admin_app(tmp_path)
    response = call(app, "PUT", body)
    assert response.status_code == 400 and expected in response.json()["error"]


def test_a_short_token_is_refused() -> None:
    with pytest.raises(fapilog.ConfigurationError, match="FAPILOG_ADMIN__TOKEN"):
        configure_logging(admin={"token": "short"})


# -- the debug header -------------------------------------------------------------------------


def test_the_debug_header_with_the_token_exports_the_requests_debug_lines_at_once(
    tmp_path: Path,
) -> None:
    app, path = admin_app(tmp_path)
    serve(app, ["/ok?tag=debugged"], headers={"X-Fapilog-Debug": TOKEN})
    serve(app, ["/ok?tag=wrong"], headers={"X-Fapilog-Debug": "not-the-token-at-all"})
    serve(app, ["/ok?tag=none"])
    found = [line for line in lines(path) if line["logger"] != "httpx"]
    steps = steps_in(found)
    assert {step["tag"] for step in steps} == {"debugged"} and len(steps) == 5
    events = requests_in(found)
    assert found.index(steps[-1]) < found.index(events[0])
    assert [e.get("fapilog.recorder.discarded") for e in events] == [None, 5, 5]
