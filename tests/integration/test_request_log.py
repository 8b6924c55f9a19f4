"""Request ids and the on-disk access log, through real nginx in both modes."""

from __future__ import annotations

import json
import os
import re
import signal
import string
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import user, wait_until

SAFE = st.text(alphabet=string.ascii_letters + string.digits + "._:-", min_size=8, max_size=128)
UNSAFE = st.one_of(st.text(alphabet=string.ascii_letters, min_size=1, max_size=7),
                   st.text(alphabet=string.ascii_letters, min_size=129, max_size=200),
                   st.text(alphabet=string.ascii_letters + " /\"'{}<>;,=", min_size=8, max_size=40)
                   .filter(lambda t: any(c in t for c in " /\"'{}<>;,=") and t.strip() == t))
GENERATED = re.compile(r"^[0-9a-f]{32}$")


@settings(max_examples=12, deadline=None)
@given(rid=SAFE)
def test_a_safe_client_request_id_is_kept_end_to_end(stack, rid):
    stack.mocks.clear()
    status, headers, _ = stack.client.chat(user("hi"), headers={"X-Request-Id": rid, "X-Test-Pin": "nano-qwen3-4b"})
    assert status == 200 and headers["X-Request-Id"] == rid
    (got,) = stack.mocks.received("nano-qwen3-4b")
    assert {k.lower(): v for k, v in got["headers"].items()}["x-request-id"] == rid


@settings(max_examples=12, deadline=None)
@given(rid=UNSAFE)
def test_anything_else_gets_a_generated_id(stack, rid):
    status, headers, _ = stack.client.chat(user("hi"), headers={"X-Request-Id": rid})
    assert status == 200 and GENERATED.match(headers["X-Request-Id"]) and headers["X-Request-Id"] != rid


def test_errors_carry_the_request_id_too(stack):
    status, headers, _ = stack.client.chat(user("hi"), headers={"X-Request-Id": "client-id-123456",
                                                                 "X-Constitutional-Hash": "f" * 16})
    assert status == 412 and headers["X-Request-Id"] == "client-id-123456"


def test_the_access_log_has_the_request_and_reopens_on_usr1(stack):
    log = stack.run_dir / "access.log"
    status, headers, _ = stack.client.chat(user("logged"), headers={"X-Request-Id": "access-log-check-1"})
    assert status == 200
    assert wait_until(lambda: "access-log-check-1" in log.read_text(), 5)
    line = next(json.loads(line) for line in log.read_text().splitlines() if "access-log-check-1" in line)
    assert line["served"] and line["tier"] and line["status"] == "200" and line["request_time"]
    assert "logged" not in log.read_text()          # no prompt text
    rotated = log.with_suffix(".log.1")
    os.replace(log, rotated)
    os.kill(stack.procs["nginx"].pid, signal.SIGUSR1)
    assert wait_until(log.exists, 5)
    time.sleep(0.2)
    stack.client.chat(user("after"), headers={"X-Request-Id": "access-log-check-2"})
    assert wait_until(lambda: "access-log-check-2" in log.read_text(), 5)
    assert "access-log-check-2" not in rotated.read_text()
