"""Small file helpers shared by every stage: atomic writes and JSONL."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from cotlab import CotlabError


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write via a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one row and flush it to disk, so an interrupted run keeps every finished row."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path, *, tolerate_torn_tail: bool = False) -> list[dict]:
    """Read a JSONL file; a malformed line is an error naming the file and line number.

    tolerate_torn_tail: drop a final line without a newline that does not parse (what a killed
    writer leaves behind), so resumable stages can pick up where they stopped.
    """
    path = Path(path)
    if not path.is_file():
        raise CotlabError(f"file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_torn_tail and number == len(lines) and not line.endswith("\n"):
                break
            raise CotlabError(f"{path}:{number}: malformed JSON line ({e.msg})") from None
        if not isinstance(row, dict):
            raise CotlabError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def repair_torn_tail(path: str | Path) -> int:
    """Cut a final line that has no newline (a writer killed mid-line) so appends stay valid JSONL.
    Returns the number of bytes removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
    return len(data) - keep


def set_aside(path: str | Path) -> Path:
    """Rename earlier work that no longer matches its parameters to `NAME.earlier-N` beside it:
    redone work never overwrites or deletes what was there.  Returns the new name."""
    path = Path(path)
    for n in range(1, 10_000):
        target = path.with_name(f"{path.name}.earlier-{n}")
        if not target.exists():
            os.replace(path, target)
            return target
    raise CotlabError(f"too many earlier copies beside {path}")


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes (which weights an evaluation was made with)."""
    import hashlib

    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
