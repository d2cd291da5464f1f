"""The package as a whole: what importing it costs, what its docs cite."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import smtp_message

# What a sans-I/O package must not pull in (DESIGN: smtp_message "does no
# I/O and knows no event loop").
EVENT_LOOPS = ("asyncio", "anyio", "trio", "sniffio", "uvloop")


def test_import_loads_no_event_loop() -> None:
    """DESIGN contract (h11's sans-I/O rule): importing smtp_message, in a
    fresh interpreter, imports neither asyncio nor anyio nor trio."""
    code = "import json, sys\nimport smtp_message\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded = json.loads(out)
    assert "smtp_message" in loaded
    assert [m for m in loaded if m.split(".")[0] in EVENT_LOOPS] == []


@pytest.mark.parametrize(
    "name",
    [
        "ReceiveBuffer",
        "ReplyParser",
        "DataReader",
        "DotStuffer",
        "LineEndingNormalizer",
        "BareLineEndings",
        "ServerConnection",
        "ClientConnection",
        "Extensions",
        "Mailbox",
        "parse_command",
        "parse_path",
        "parse_auth_response",
    ],
)
def test_readers_and_state_machines_cite_their_rfc(name: str) -> None:
    """STYLE: the RFC sentence is the best comment.  Each reader, writer
    and state machine's docstring names the RFC section it implements
    (e.g. RFC 5321 4.1.1.4 for the DATA reader)."""
    doc = getattr(smtp_message, name).__doc__ or ""
    assert re.search(r"RFC \d{3,4} \d+(\.\d+)*", doc), name
