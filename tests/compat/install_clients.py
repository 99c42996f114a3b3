"""Install the released Zeus clients that tests/compat drives, each in its own directory.

    .venv/bin/python tests/compat/install_clients.py [--dest DIR]

Every release ships a top-level ``zeus`` package, so each one goes into its own
``pip install --target`` directory (``<dest>/<key>/``) together with the few
runtime packages that its zeusd code paths import (httpx and its dependencies,
nvidia-ml-py for ``pynvml``). The tests run the clients with ``python -S`` and
``PYTHONPATH=<dest>/<key>``, so nothing else leaks in and nothing here leaks
into the venv. The heavy optional dependencies of the wheels (numpy, pandas,
scikit-learn, pydantic, ...) are not installed: the code paths under test do
not import them.

Idempotent: a directory whose ``INSTALLED`` marker lists exactly the pinned
requirements below is left alone; anything else is rebuilt in a scratch
directory and renamed into place, so an interrupted run never leaves a
directory that looks installed. Needs the package index (PyPI or its mirror).
The default ``<dest>`` is ``<repo>/.venv/zeus-clients``; ``ZEUSD_COMPAT_CLIENTS``
overrides it, for this script and for the tests alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = "INSTALLED"

# The runtime packages of the code paths under test, pinned.
RUNTIME = ("httpx==0.28.1", "nvidia-ml-py==13.615.71")

# key -> the client wheel (installed without its declared dependencies).
CLIENTS = {
    "zeus-0.16.0": "zeus==0.16.0",
    "zeus-ml-0.11.0.post1": "zeus-ml==0.11.0.post1",
    "zeus-0.15.1": "zeus==0.15.1",
}


def default_dest() -> Path:
    env = os.environ.get("ZEUSD_COMPAT_CLIENTS")
    return Path(env) if env else REPO / ".venv" / "zeus-clients"


def marker_text(key: str) -> str:
    return "\n".join([CLIENTS[key], *RUNTIME]) + "\n"


def is_installed(dest: Path, key: str) -> bool:
    marker = dest / key / MARKER
    return marker.is_file() and marker.read_text() == marker_text(key)


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-compile", *args]
    subprocess.run(cmd, check=True)


def install(dest: Path, key: str) -> bool:
    """Install one client; False when it was already there."""
    if is_installed(dest, key):
        return False
    dest.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest))
    try:
        _pip("--no-deps", "--target", str(scratch), CLIENTS[key])
        _pip("--target", str(scratch), *RUNTIME)
        (scratch / MARKER).write_text(marker_text(key))
        final = dest / key
        if final.exists():
            shutil.rmtree(final)
        scratch.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=default_dest())
    args = parser.parse_args(argv)
    for key in CLIENTS:
        done = install(args.dest, key)
        print(f"{args.dest / key}: {'installed' if done else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
