"""Test-session setup shared by every test file.

The Hub: `huggingface_hub` and `datasets` read `HF_ENDPOINT` and `HF_HUB_DISABLE_XET` when they
are imported, so a local Hub-compatible server (tests/hub_server.py) is started here, before any
test module imports them, and every Hub call of the session goes to it. `HF_HOME` points at a
fresh folder so no token stored on this machine is ever picked up.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

HUB_TOKENS = {"hf_alice_write": "alice", "hf_bob_write": "bob"}

_hub = HubServer(HUB_TOKENS).start()
_hf_home = tempfile.mkdtemp(prefix="hf_maskdp_test_home_")
os.environ.update(
    HF_ENDPOINT=_hub.endpoint,
    HF_HUB_DISABLE_XET="1",
    HF_HOME=_hf_home,
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
)
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def hub() -> HubServer:
    """The session's local Hub; tokens: `hf_alice_write` (user alice), `hf_bob_write` (user bob)."""
    return _hub
