"""The local Prefect server the CLI uses when no PREFECT_API_URL is set: started once, then reused.

Prefect's own embedded (ephemeral) mode starts a server subprocess in every process, 15-20 s each time
on a small machine. Instead the first `batchscribe run` starts `prefect server start` on 127.0.0.1 in the
background (its database and logs under `<cache-dir>/prefect/`), and every later run connects to it in
well under a second. `batchscribe server stop` stops it; its UI is at the URL `batchscribe server status`
prints.

Its port is chosen free at start, so the server is told it (`PREFECT_UI_API_URL`): the UI asks the server
which API to call (`/ui-settings`), and left alone that answer is Prefect's default port, 4200.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from batchscribe.options import default_cache_dir

STARTUP_TIMEOUT_S = 180  # a fresh database takes ~17 s on an idle 2-core machine
# Offline and quiet: no telemetry from the server or the client (each can be overridden from the environment).
OFFLINE_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict[str, str], log: Any, **popen: Any) -> subprocess.Popen:
    """`prefect server start` on 127.0.0.1:`port` with `env`, its output to `log`; returns at once."""
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **popen)


def wait_healthy(api_url: str, process: subprocess.Popen, timeout_s: float = STARTUP_TIMEOUT_S) -> bool:
    """Wait until the server at `api_url` answers /health; False when `process` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not healthy(api_url):
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


def ui_url(api_url: str) -> str:
    """The UI's address for a server's API URL (`http://127.0.0.1:PORT/api` -> `http://127.0.0.1:PORT`)."""
    return api_url.removesuffix("/").removesuffix("/api")


def server_env(api_url: str) -> dict[str, str]:
    """The local server's environment: offline, with its UI pointed at its own API."""
    return {
        **os.environ,
        **OFFLINE_ENV,
        "PREFECT_HOME": str(state_dir() / "home"),
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }


def state_dir() -> Path:
    return default_cache_dir() / "prefect"


def _state_file() -> Path:
    return state_dir() / "server.json"


def healthy(api_url: str) -> bool:
    """Whether a Prefect API answers /health at `api_url`."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def running_server() -> dict | None:
    """{"pid", "api_url"} of the local server when it answers, else None."""
    try:
        info = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    return info if healthy(info["api_url"]) else None


def ensure_local_server() -> str:
    """The API URL of the local server, starting it first when none answers (one starter at a time)."""
    if info := running_server():
        return info["api_url"]
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second CLI started meanwhile waits here, then reuses ours
        if info := running_server():
            return info["api_url"]
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        log = (state_dir() / "server.log").open("ab")
        # start_new_session: the server outlives this CLI and its Ctrl-C.
        process = start_server(port, server_env(api_url), log, start_new_session=True)
        if not wait_healthy(api_url, process):
            process.kill()
            raise RuntimeError(f"the local Prefect server did not start; see {state_dir() / 'server.log'}")
        _state_file().write_text(json.dumps({"pid": process.pid, "api_url": api_url}))
        return api_url


def stop_local_server() -> bool:
    """Stop the local server; False when none was running."""
    info = running_server()
    _state_file().unlink(missing_ok=True)
    if not info:
        return False
    try:
        os.kill(info["pid"], signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(100):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.kill(info["pid"], signal.SIGKILL)
    return True
