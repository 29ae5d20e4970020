"""``milvus-lite server`` on this machine's loopback: the Milvus-protocol server that lets several
processes share one Milvus Lite gallery (docs/search.md, "Milvus").  Started by the tests and the
serve load benchmark; an operator may start it the same way.  It runs as a separate program, so
nothing here imports pymilvus."""

import os
import socket
import subprocess
import sys
import time
from typing import Tuple

from reid_srdl.search.stores.base import StoreError


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lite_server(data_dir: str, timeout: float = 60.0) -> Tuple[subprocess.Popen, str]:
    """Start ``milvus-lite server --data-dir data_dir`` on 127.0.0.1 (a free port) and wait until it
    accepts connections; ``(process, uri)``.  The caller stops the process.  A :class:`StoreError`
    if it exits or does not answer within ``timeout`` seconds."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "milvus-lite")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "milvus_lite"]
    proc = subprocess.Popen(
        cmd + ["server", "--data-dir", data_dir, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"milvus-lite server exited: {proc.stderr.read().decode()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise StoreError(f"milvus-lite server did not start in {timeout:.0f} s (pip install -e '.[milvus]')")
