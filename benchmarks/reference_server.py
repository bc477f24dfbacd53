"""The reference server (xiaozhi-esp32-server) on loopback, for `benchmarks/test_reference.py`.

Runs on the host's own Python (3.11, standard library only), not in the project's environment:

    export XIAOZHI_REFERENCE_SERVER=/path/to/xiaozhi-esp32-server   # its checkout
    python3 benchmarks/reference_server.py setup
    python3 benchmarks/reference_server.py status  # what would run, or why not
    python3 benchmarks/reference_server.py start   # prints the shell variables the bench reads
    python3 benchmarks/reference_server.py stop

`setup` builds a venv in ~/.cache/xiaozhi-ref (XIAOZHI_REFERENCE_CACHE) with only what the
server imports for this configuration (from PyPI), takes libopus from Debian's package when the
host has none, links the ffmpeg binary that the imageio-ffmpeg wheel ships when the host has
none, and writes `data/.config.yaml` in the checkout: its Silero VAD (onnxruntime, no torch),
its OpenAI-type ASR, LLM and TTS providers pointed at the bench's loopback fakes
(`benchmarks/reference_fakes.py`). `start` picks free ports, rewrites that configuration with
them, starts `app.py` and waits for its WebSocket. Nothing is downloaded by `start`.
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import time

CACHE = Path(os.environ.get("XIAOZHI_REFERENCE_CACHE", Path.home() / ".cache" / "xiaozhi-ref"))
VENV = CACHE / "venv"
LIB = CACHE / "lib"  # libopus from Debian's package, when the host has none
STAMP = VENV / "xiaozhi-ref-ready"
PID_FILE = CACHE / "server.pid"
PYTHONS = ("/usr/bin/python3.11", "/usr/bin/python3.10", "/usr/bin/python3.12", "python3.11")
# What `app.py` imports with the providers below (its plugins are imported whatever is
# configured), pinned as in its requirements.txt; onnxruntime is what its Silero VAD runs on.
# Left out: torch, torchaudio, funasr, modelscope, sherpa_onnx, vosk, edge_tts, mem0ai and the
# other cloud SDKs, which only the providers not used here import.
REQUIREMENTS = (
    "websockets==14.2",
    "numpy==1.26.4",
    "opuslib_next==1.1.5",
    "pydub==0.25.1",
    "openai==2.8.1",
    "httpx==0.28.1",
    "aiohttp==3.13.2",
    "loguru==0.7.3",
    "requests==2.32.5",
    "PyJWT==2.10.1",
    "portalocker==3.2.0",
    "Jinja2==3.1.6",
    "aioconsole==0.8.2",
    "mcp==1.22.0",
    "bs4==0.0.2",
    "cnlunar==0.2.0",
    "markitdown==0.1.3",
    "PyYAML",
    "cryptography",
    "onnxruntime",
    "imageio-ffmpeg",
)
API_KEY = "sk-test"  # what tests/llm_server.py accepts
STARTUP_TIMEOUT_S = 90.0


def server_dir(source: str) -> Path:
    """The directory with `app.py`: the checkout's main/xiaozhi-server, or the path itself."""
    root = Path(source).expanduser().resolve()
    for candidate in (root, root / "main" / "xiaozhi-server"):
        if (candidate / "app.py").is_file() and (candidate / "config.yaml").is_file():
            return candidate
    raise SystemExit(f"no xiaozhi-server (app.py, config.yaml) in {root}")


def config(ws_port: int, http_port: int, llm_url: str, media_url: str) -> dict[str, object]:
    """Its `data/.config.yaml` (JSON is YAML): loopback ports and fakes, its Silero VAD."""
    return {
        "server": {"ip": "127.0.0.1", "port": ws_port, "http_port": http_port},
        "selected_module": {
            "VAD": "SileroVAD",
            "ASR": "BenchASR",
            "LLM": "BenchLLM",
            "TTS": "BenchTTS",
            "Memory": "nomem",
            "Intent": "nointent",
        },
        "ASR": {
            "BenchASR": {
                "type": "openai",
                "api_key": API_KEY,
                "base_url": f"{media_url}/v1/audio/transcriptions",
                "model_name": "bench",
                "output_dir": "tmp/",
            }
        },
        "LLM": {
            "BenchLLM": {
                "type": "openai",
                "model_name": "test-model",
                "url": llm_url,
                "api_key": API_KEY,
            }
        },
        "TTS": {
            "BenchTTS": {
                "type": "openai",
                "api_key": API_KEY,
                "api_url": f"{media_url}/v1/audio/speech",
                "model": "tts-1",
                "voice": "alloy",
                "format": "wav",
                "output_dir": "tmp/",
            }
        },
    }


def write_config(directory: Path, ws_port: int, http_port: int, llm: int, media: int) -> Path:
    """Write the configuration override where the server reads it."""
    path = directory / "data" / ".config.yaml"
    path.parent.mkdir(exist_ok=True)
    body = config(ws_port, http_port, f"http://127.0.0.1:{llm}/v1", f"http://127.0.0.1:{media}")
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return path


def _python() -> str:
    for candidate in PYTHONS:
        found = shutil.which(candidate)
        if found:
            return found
    raise SystemExit(f"no Python 3.10-3.12 for the reference server (tried {', '.join(PYTHONS)})")


def _run(*command: str | Path) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True)


def _libopus() -> None:
    """Unpack Debian's libopus0 into the cache when the host's linker cannot find libopus."""
    if ctypes.util.find_library("opus") or (LIB / "libopus.so").exists():
        return
    download = CACHE / "deb"
    download.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "libopus0"], cwd=download, check=True)
    (package,) = download.glob("libopus0_*.deb")
    _run("dpkg", "-x", package, download / "root")
    LIB.mkdir(exist_ok=True)
    for library in (download / "root").rglob("libopus.so*"):
        shutil.copy2(library, LIB / library.name, follow_symlinks=False)
    (LIB / "libopus.so").symlink_to("libopus.so.0")


def _ffmpeg() -> None:
    """The server checks for `ffmpeg` at start; link the wheel's binary when the host has none."""
    link = VENV / "bin" / "ffmpeg"
    if shutil.which("ffmpeg") or link.exists():
        return
    binary = subprocess.run(
        [
            VENV / "bin" / "python",
            "-c",
            "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    link.symlink_to(binary)


def setup(source: str) -> None:
    """Build the venv and write the configuration (the only step that downloads)."""
    directory = server_dir(source)
    if not (VENV / "bin" / "python").exists():
        _run(_python(), "-m", "venv", VENV)
    _run(VENV / "bin" / "python", "-m", "pip", "install", "-q", *REQUIREMENTS)
    _libopus()
    _ffmpeg()
    write_config(directory, 8000, 8003, 8100, 8101)
    STAMP.write_text("\n".join(REQUIREMENTS) + "\n", encoding="utf-8")
    print(f"ready: {VENV} for {directory}")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    if LIB.exists():
        env["LD_LIBRARY_PATH"] = f"{LIB}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


def start(source: str, log: Path) -> None:
    """Start the server on free loopback ports; print the variables the bench reads."""
    if not STAMP.exists():
        raise SystemExit(f"run `{sys.argv[0]} setup` first (no {STAMP})")
    directory = server_dir(source)
    ws_port, http_port, llm_port, media_port = _free_ports(4)
    write_config(directory, ws_port, http_port, llm_port, media_port)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(VENV / "bin" / "python"), "app.py"],
            cwd=directory,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PID_FILE.write_text(str(process.pid), encoding="utf-8")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the reference server exited ({process.returncode}); see {log}")
        try:
            socket.create_connection(("127.0.0.1", ws_port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                stop()
                raise SystemExit(
                    f"the reference server did not listen in time; see {log}"
                ) from None
            time.sleep(0.2)
    print(f"XIAOZHI_REFERENCE_URL=ws://127.0.0.1:{ws_port}/xiaozhi/v1/")
    print(f"XIAOZHI_REFERENCE_LLM_PORT={llm_port}")
    print(f"XIAOZHI_REFERENCE_MEDIA_PORT={media_port}")
    print(f"XIAOZHI_REFERENCE_PID={process.pid}")


def stop() -> None:
    """Stop the server that `start` started (its process group, by the recorded id)."""
    if not PID_FILE.exists():
        return
    pid = int(PID_FILE.read_text(encoding="utf-8"))
    PID_FILE.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def status(source: str) -> int:
    """Print what would run (or why nothing can); 0 when `start` can run."""
    directory = server_dir(source)
    if not STAMP.exists():
        print(f"not set up: run `python3 benchmarks/reference_server.py setup` (no {STAMP})")
        return 1
    logger = (directory / "config" / "logger.py").read_text(encoding="utf-8")
    version = next(
        (line.split('"')[1] for line in logger.splitlines() if line.startswith("SERVER_VERSION")),
        "unknown",
    )
    git = subprocess.run(
        ["git", "-C", str(directory), "log", "-1", "--format=%h %cs"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = git.stdout.strip() or "not a git work tree"
    print(f"reference server {version} ({commit}) in {directory}, venv {VENV}")
    return 0


def main() -> None:
    """Command line: setup, status, start, stop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("setup", "status", "start", "stop"))
    parser.add_argument("--source", default=os.environ.get("XIAOZHI_REFERENCE_SERVER", ""))
    parser.add_argument("--log", type=Path, default=Path("out/bench/reference_server.log"))
    args = parser.parse_args()
    if args.command == "stop":
        stop()
        return
    if not args.source:
        raise SystemExit("set XIAOZHI_REFERENCE_SERVER (or --source) to its checkout")
    if args.command == "setup":
        setup(args.source)
    elif args.command == "status":
        sys.exit(status(args.source))
    else:
        start(args.source, args.log)


if __name__ == "__main__":
    main()
