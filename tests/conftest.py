"""Shared fixtures: the real embedded model, a run directory, loopback servers."""

from __future__ import annotations

import pytest

from rewatch.models.local import EmbeddedChatModel


@pytest.fixture(scope="session")
def embedded_llm() -> EmbeddedChatModel:
    """The real SmolLM2-135M in llama.cpp, the fast model of unit tests (no cache: every call
    generates tokens)."""
    return EmbeddedChatModel("smollm2-135m")


@pytest.fixture
def embedded_server_url():
    """`rewatch serve` (the embedded model behind llama.cpp's OpenAI-compatible server) on a
    free loopback port; yields its base URL and stops it afterwards."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "rewatch.cli", "serve", "--port", str(port),
                             "--n-ctx", "2048"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                out = proc.stdout.read().decode()[-2000:] if proc.stdout else ""
                raise AssertionError(f"rewatch serve did not start: {out}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
