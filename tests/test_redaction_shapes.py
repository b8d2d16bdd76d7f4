"""Redaction of every value shape a log call accepts: bytes, header pairs, dict keys, trace
ids that are not ids, logger names; values that end where the secret ends; the credential
formats of AWS, GitHub, GitLab, Slack and PEM keys; visible truncation; the audit.
(Every exporter: tests/test_redaction_exporters.py; random shapes:
tests/test_redaction_properties.py.)"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from conftest import MemoryExporter
from fapilog import LoggingSettings, configure_logging, get_logger
from fapilog.capture.redaction import AUDIT_KEY
from fapilog.redaction import Redactor

M = "[REDACTED]"


def redact(event: dict[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    return dict((redactor or Redactor())(None, "info", dict(event)))


# -- bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_likes_are_scanned_as_the_text_they_hold(kind: Any) -> None:
    result = redact({"body": kind(b"user=ann&password=hunter2")})
    assert result["body"] == b"user=ann&password=" + M.encode()


def test_a_bytes_message_and_bytes_that_are_not_utf8() -> None:
    assert redact({"event": b"pwd=hunter2"})["event"] == b"pwd=" + M.encode()
    raw = b"\xff\xfe token=abc\xe9def"
    assert redact({"body": raw})["body"] == b"\xff\xfe token=" + M.encode()
    clean = b"\x00\x01 nothing"
    assert redact({"body": clean})["body"] is clean


# -- header pairs ------------------------------------------------------------------------


def test_header_pairs_are_redacted_like_a_dict() -> None:
    scope_headers = [(b"host", b"api"), (b"authorization", b"Bearer abc"), (b"cookie", b"s=1")]
    multi_items = [("X-Api-Key", "k1"), ("Accept", "*/*"), ("Content-Length", 12)]
    result = redact({"h": scope_headers, "m": multi_items, "v": {"Cookie": "s=2"}.items()})
    assert result["h"] == [(b"host", b"api"), (b"authorization", M.encode()),
                           (b"cookie", M.encode())]  # fmt: skip
    assert result["m"] == [("X-Api-Key", M), ("Accept", "*/*"), ("Content-Length", 12)]
    assert result["v"] == [("Cookie", M)]
    assert scope_headers[1] == (b"authorization", b"Bearer abc")  # never changed in place


def test_a_pair_whose_name_holds_a_secret_loses_it() -> None:
    result = redact({"f": [0, ("alpha password=hunter2", 0)], "g": [["token=abc", 5]]})
    assert result["f"] == [0, (f"alpha password={M}", 0)]
    assert result["g"] == [[f"token={M}", 5]]


# -- values that end where the secret ends -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter 2 more", f"password={M}"),  # spaces: up to the next key=
        ("password=hunter 2 more user=bob", f"password={M} user=bob"),
        ("password=ab;cd;ef user=bob", f"password={M} user=bob"),  # semicolons
        ("sid=1; password=pw; Path=/", f"sid=1; password={M}; Path=/"),  # a cookie
        ('{"password": "ab\\"cd ef", "n": 1}', f'{{"password": "{M}", "n": 1}}'),
        ("password='it\\'s mine' ok=1", f"password='{M}' ok=1"),
        ("token=[abc, def] done", f"token={M} done"),  # the brackets go with it
        ("(password=abc)", f"(password={M})"),
        ("Config(password=abc, user=bob)", f"Config(password={M}, user=bob)"),
        ("GET /cb?password=abc&next=1 HTTP/1.1", f"GET /cb?password={M}&next=1 HTTP/1.1"),
        ("q=%2Fcb%3Fpassword%3Dab%20cd%26next%3D1", f"q=%2Fcb%3Fpassword%3D{M}%26next%3D1"),
        ("next%3Dx%26PWD%3Dsecret", f"next%3Dx%26PWD%3D{M}"),
        ("line one password=abc\nline two", f"line one password={M}\nline two"),
        ("max_tokens=100 tokens: 1500", "max_tokens=100 tokens: 1500"),
    ],
)
def test_a_value_is_replaced_whole(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


# -- keys --------------------------------------------------------------------------------


def test_the_new_exact_keys_and_whole_words_only() -> None:
    event = {"pwd": "a", "passphrase": "b", "credentials": {"u": "c"}, "auth": "d",
             "author": "ann", "oauth_provider": "github", "db_passphrase": "e"}  # fmt: skip
    assert redact(event) == {"pwd": M, "passphrase": M, "credentials": M, "auth": M,
                             "author": "ann", "oauth_provider": "github",
                             "db_passphrase": M}  # fmt: skip
    text = "author=ann auth=xyz oauth=ok pwd: p1 passphrase=long phrase"
    assert Redactor().redact_text(text) == f"author=ann auth={M} oauth=ok pwd: {M} passphrase={M}"


def test_a_secret_used_as_a_dict_key_is_replaced() -> None:
    token = "ghp_" + "a1B2" * 9
    result = redact({"ids": {token: 1, "plain": 2}, token: "x"})
    assert result == {"ids": {M: 1, "plain": 2}, M: "x"}
    # (a key containing a sensitive word: a number under it stays)
    assert redact({"password=hunter2": 1}) == {f"password={M}": 1}


def test_trace_ids_are_left_alone_only_when_they_are_ids() -> None:
    ids = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
           "trace_flags": "01"}  # fmt: skip
    assert redact(ids) == ids
    assert redact({"trace_id": 12345}) == {"trace_id": 12345}
    assert redact({"trace_id": "password=hunter2", "span_id": f"x {'eyJhbGciOiJIUzI1NiJ9x'}"}) == {
        "trace_id": f"password={M}",
        "span_id": f"x {M}",
    }


# -- credential formats ------------------------------------------------------------------

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key AKIAIOSFODNN7EXAMPLE used", f"key {M} used"),
        ("temporary ASIAY34FZKBOKMUTVV7A,", f"temporary {M},"),
        ("AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", M),  # a CSV row
        ('aws_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', f'aws_key = "{M}"'),
        ("AWS_SECRET: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok", f"AWS_SECRET: {M} ok"),
        ("gh ghp_" + "x" * 36 + " ok", f"gh {M} ok"),
        ("gho_" + "Y" * 36, M),
        ("ghs_" + "1a" * 18 + ".", f"{M}."),
        ("github_pat_11ABCDEFG0" + "abc_def" * 11, M),
        ("glpat-" + "aB3_x-" * 4, M),
        ("slack xoxb-123456789012-1234567890123-" + "a" * 24, f"slack {M}"),
        ("xoxp-1-2-3-abcdef0123", M),
        ("https://hooks.slack.com/services/T00/B00/XXXX", f"https://hooks.slack.com/{M}"),
        (f"key: {PEM} end", f"key: {M} end"),
        ("cut -----BEGIN PRIVATE KEY-----\nMIIEv", f"cut {M}"),
        # not credentials
        ("AKIA is a prefix", "AKIA is a prefix"),
        ("akiaiosfodnn7example", "akiaiosfodnn7example"),
        ("ghp_short", "ghp_short"),
        ("the github_pat_ prefix", "the github_pat_ prefix"),
        ("glpat-short", "glpat-short"),
        ("-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----"),
        (
            "sha1 0123456789abcdef0123456789abcdef01234567",
            "sha1 0123456789abcdef0123456789abcdef01234567",
        ),
    ],
)
def test_credential_formats(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


def test_each_credential_format_can_be_switched_off() -> None:
    settings = LoggingSettings(redaction={"builtin_patterns": "jwt,key_value"})
    redactor = Redactor.from_settings(settings.redaction)
    assert redactor.redact_text("AKIAIOSFODNN7EXAMPLE") == "AKIAIOSFODNN7EXAMPLE"


# -- depth, exceptions, logger names -----------------------------------------------------


def test_nesting_deeper_than_kept_is_cut_visibly() -> None:
    deep: Any = "plain"
    for _ in range(40):
        deep = {"level": deep}
    text = str(redact({"deep": deep}))
    assert "<truncated: nested deeper than 32 levels>" in text and M not in text


def test_exception_notes_causes_and_context(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    try:
        try:
            raise KeyError("token=cause-secret")
        except KeyError:
            error = RuntimeError("password=message-secret")
            if sys.version_info >= (3, 11):
                error.add_note("pwd=note-secret")
            raise error  # noqa: B904 - the context, not a cause, is what is tested
    except RuntimeError:
        get_logger("x").exception("failed")
    (record,) = memory_exporter.records()
    text = repr(record.log_record.attributes)
    assert "cause-secret" not in text and "message-secret" not in text
    assert "note-secret" not in text


def test_a_logger_name_never_carries_a_secret_out(memory_exporter: MemoryExporter) -> None:
    configure_logging(exporters=[memory_exporter.name])
    get_logger("jobs.password=hunter2").info("one")
    get_logger("jobs.plain").info("two")
    names = [r.instrumentation_scope.name for r in memory_exporter.records()]
    assert names == [f"jobs.password={M}", "jobs.plain"]


# -- the audit ---------------------------------------------------------------------------


def test_the_audit_says_where_and_by_which_rule_never_the_text() -> None:
    redactor = Redactor(audit=True)
    token = "ghp_" + "z9" * 18
    result = redact(
        {
            "event": "login eyJhbGciOiJIUzI1NiJ9xx",
            "password": "p",
            "nested": {"api_key": "k", "items": [{"note": "pwd=hunter2"}], token: 1},
            "headers": [(b"cookie", b"s=1")],
            "body": b"secret=abc",
            "clean": "nothing here",
        },
        redactor,
    )
    assert result[AUDIT_KEY] == [
        "message:jwt",
        "password:key",
        "nested.api_key:key",
        "nested.items[0].note:key_value",
        f"nested.{M}:key_text",
        "headers[0][1]:key",
        "body:key_value",
    ]
    audit_text = repr(result[AUDIT_KEY])
    for secret in ("hunter2", token, "eyJhbGciOiJIUzI1NiJ9xx", "abc"):
        assert secret not in audit_text
    assert AUDIT_KEY not in redact({"event": "clean", "n": 1}, redactor)


def test_the_audit_setting(
    memory_exporter: MemoryExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAPILOG_REDACTION__AUDIT", "true")
    configure_logging(exporters=[memory_exporter.name])
    get_logger("x").info("e", token="t")
    (record,) = memory_exporter.records()
    assert list(record.log_record.attributes[AUDIT_KEY]) == ["token:key"]


# -- what the review found ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{\\"password\\": \\"hunter2\\", \\"n\\": 1}',
            f'{{\\"password\\": \\"{M}\\", \\"n\\": 1}}',
        ),
        (
            json.dumps(json.dumps({"password": "hunter 2", "n": 1})),
            json.dumps(json.dumps({"password": M, "n": 1})),
        ),
        ("password=\n hunter2", f"password=\n {M}"),  # the value on the next line
        ('"password":\r\n"hunter2"', f'"password":\r\n"{M}"'),
    ],
)
def test_json_inside_a_string_and_values_on_the_next_line(text: str, expected: str) -> None:
    assert Redactor().redact_text(text) == expected


def test_keys_that_are_not_plain_strings() -> None:
    import enum

    class Name(str):
        pass

    class Field(enum.Enum):
        PASSWORD = "password"

    token = "ghp_" + "c3" * 18
    result = redact(
        {
            "sub": {Name("Authorization"): "Bearer x"},
            "enum": {Field.PASSWORD: "hunter2"},
            "tuple": {(token,): 1},
            "pairs": [(bytearray(b"cookie"), b"s=1"), (Name("X-Api-Key"), "k")],
        }
    )
    assert list(result["sub"].values()) == [M]
    assert list(result["enum"].values()) == [M]
    assert token not in repr(result["tuple"])
    assert [pair[1] for pair in result["pairs"]] == [M.encode(), M]


def test_a_redacted_key_never_replaces_another() -> None:
    token = "ghp_" + "d4" * 18
    assert redact({"d": {M: "x", token: "y"}}) == {"d": {M: "x", f"{M}#2": "y"}}
    assert redact({M: "x", token: "y"}) == {M: "x", f"{M}#2": "y"}


ADVERSARIAL = """
import sys, time
from fapilog.redaction import Redactor
from fapilog.integrations.access_lines import clean_text
from fapilog.settings._errors import mask_userinfo
r = Redactor()
n = 100_000
texts = ["token=x" + " " * n, "token=x" + ";" * n, "token=x" + "," * n, "password=" + "]" * n,
         "password" + "=" * n, "aws_" * (n // 4), "token=[" * (n // 7),
         'password="' + '\\\\"' * (n // 2), "token=x " + "a" * n, "token=[x k=1 " * (n // 13),
         "password=" + "(" * n]
for text in texts:
    r.redact_text(text)
clean_text("GET /#" + "(/" * n + "#? HTTP/1.1", None)
clean_text("GET " + "?" * n + " x", "*")
mask_userinfo("a://" * (n // 4) + " @")
print("done")
"""


def test_adversarial_text_is_redacted_in_one_pass(subprocess_env: dict[str, str]) -> None:
    """Inputs built to make each pattern backtrack (runs of blanks, separators, brackets,
    quotes, a request line of nested paths): 100 KB each, all of them well within the time
    one quadratic search of them took (minutes)."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", ADVERSARIAL], env=subprocess_env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr[-2000:]
