"""Bad and good inputs for the pipeline tests, each made the way it happens in the wild."""

from __future__ import annotations

import contextlib
import io
import socket
import sqlite3
import struct
import subprocess
import zlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from PIL import Image

# Cheap settings: no learned network, one pyramid level, one iteration; still every stage runs.
FAST = {"size": 48, "levels": 1, "iterations": [1], "warp_method": "none", "device": "cpu"}


def unused_port() -> int:
    """A 127.0.0.1 port nobody listens on now: a dead endpoint, or one for a server to start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header announcing 400 MP: decoding it would need ~1.2 GB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def unsupported_bmp() -> bytes:
    """A BMP whose header claims 64 bits per pixel, a depth PIL cannot decode."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buffer, "BMP")
    data = bytearray(buffer.getvalue())
    data[28:30] = struct.pack("<H", 64)
    return bytes(data)


def truncated_png(path: Path) -> bytes:
    return path.read_bytes()[:120]


def write_bad_inputs(folder: Path, good: Path) -> dict[str, str]:
    """id -> file name for each kind of bad input, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(truncated_png(good))
    (folder / "bomb.png").write_bytes(png_bomb())
    (folder / "deep.bmp").write_bytes(unsupported_bmp())
    (folder / "notes.png").write_text("this is not an image\n")
    return {"bad-missing": "nowhere.png", "bad-empty": "empty.png",
            "bad-truncated": "truncated.png", "bad-bomb": "bomb.png",
            "bad-mode": "deep.bmp", "bad-text": "notes.png"}


def write_manifest_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# A bug planted through ``sitecustomize`` in a process that runs items: reading any input
# whose path contains ``bug-`` raises ZeroDivisionError (lwst's own error, not the input's).
PLANTED_BUG = """
import lwst.stylize

def _plant(real):
    def read_image(uri, *args, **kwargs):
        if "bug-" in str(uri):
            return 1 // 0
        return real(uri, *args, **kwargs)
    return read_image

lwst.stylize.read_image = _plant(lwst.stylize.read_image)  # both paths read inputs through it
"""


def plant_read_bug(monkeypatch, error: BaseException | None = None) -> None:
    """In this process, reading an input whose path holds ``bug-`` fails as a bug in lwst
    would: ``error`` raised, or ``1 // 0`` (the same bug as `PLANTED_BUG` in a worker)."""
    import lwst.stylize

    real = lwst.stylize.read_image

    def read_image(uri, *args, **kwargs):
        if "bug-" in str(uri):
            if error is None:
                return 1 // 0
            raise error
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(lwst.stylize, "read_image", read_image)


def fine_bug_missing_rows(image_folder: Path) -> list[dict]:
    """Three texture items of `image_folder`: ``fine``, ``bug`` (its content's path holds
    ``bug-``: see `plant_read_bug`) and ``missing`` (no such file: an input failure)."""
    photos, styles = image_folder / "contents", image_folder / "styles"
    (photos / "bug-a.png").write_bytes((photos / "photo0.png").read_bytes())
    texture = str(styles / "style0.png")
    return [{"id": "fine", "content": str(photos / "photo1.png"), "texture": texture},
            {"id": "bug", "content": str(photos / "bug-a.png"), "texture": texture},
            {"id": "missing", "content": str(photos / "nowhere.png"), "texture": texture}]


def plant_bug(folder: Path) -> Path:
    """A folder holding `PLANTED_BUG` as ``sitecustomize.py``: put it first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(PLANTED_BUG)
    return folder


def task_running(prefect_home: Path, name: str) -> bool:
    """Whether the temporary Prefect server (its database under ``prefect_home``) records a
    task run whose name starts with ``name`` as running: the task has started, not only been
    submitted."""
    database = prefect_home / "prefect.db"
    if not database.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True,
                                                timeout=1)) as db:
            return db.execute("SELECT 1 FROM task_run WHERE name LIKE ? AND state_type = "
                              "'RUNNING'", (name + "%",)).fetchone() is not None
    except sqlite3.Error:  # the server is still creating its tables, or holds a write lock
        return False


def kill_all(run: subprocess.Popen, processes: Iterable) -> None:
    """Kill ``run`` and the ``psutil`` processes it started, whatever state they are in: a
    test that starts `lwst run` never leaves one behind, even when it fails."""
    import psutil

    if run.poll() is None:
        run.kill()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
