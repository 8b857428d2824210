"""Small questions about this machine: root or not, a checksum, a package, a free port, waiting."""

import hashlib
import os
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

IS_ROOT = os.geteuid() == 0


def sha256(path):
    """The file's SHA-256 hex digest, or ``None`` when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def dpkg_installed(package):
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return out.returncode == 0 and "ok installed" in out.stdout


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on at ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.5, what=None):
    """Call ``predicate`` until it returns something true or ``timeout`` seconds pass; its last
    value. With ``what``, a timeout fails the test instead (``AssertionError`` naming ``what``)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            break
        time.sleep(interval)
    if not value and what is not None:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value


@contextmanager
def immutable_dir(path):
    """``path`` made (a directory) with the immutable attribute (chattr +i): nothing can be created
    in it, not even by root; the attribute goes again afterwards. Skips where chattr cannot."""
    import pytest  # pylint: disable=import-outside-toplevel

    path.mkdir()
    done = subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True)
    if done.returncode:
        pytest.skip(f"chattr +i not supported here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def processes_naming(path):
    """Commands of the host's processes whose command line names ``path`` (nspawn, lxcfs)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode("utf-8", "replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        if any(arg.startswith(path) for arg in argv):
            found.append(" ".join(argv).strip())
    return found
