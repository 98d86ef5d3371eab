"""Small real wheels for the updater's tests: a package ``fakeagent`` whose
``python -m fakeagent`` exits 0 (a healthy release) or 1 (a release that fails to start)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def make_wheel(
    out: Path, version: str, *, healthy: bool = True, payload: bytes = b"", stored: bool = False
) -> Path:
    """Write ``fakeagent-<version>-py3-none-any.whl`` into ``out``; ``payload`` is shipped
    as a data file (to make an install big or slow), compressed unless ``stored``."""
    name = f"fakeagent-{version}"
    files = {
        "fakeagent/__init__.py": f'VERSION = "{version}"\n'.encode(),
        "fakeagent/__main__.py": f"raise SystemExit({0 if healthy else 1})\n".encode(),
        f"{name}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: fakeagent\nVersion: {version}\n"
        ).encode(),
        f"{name}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    if payload:
        files["fakeagent/payload.bin"] = payload
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in files.items())
    record += f"{name}.dist-info/RECORD,,\n"
    path = out / f"{name}-py3-none-any.whl"
    out.mkdir(parents=True, exist_ok=True)
    how = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", how) as whl:
        for p, d in files.items():
            whl.writestr(p, d)
        whl.writestr(f"{name}.dist-info/RECORD", record)
    return path
