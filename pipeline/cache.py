"""Cache location, joblib memory, atomic writes and content fingerprints."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import joblib

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """The cache folder: `$FAIRCXR_CACHE` or `cache/` at the project root."""
    path = Path(os.environ.get("FAIRCXR_CACHE", PROJECT_ROOT / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_dir() -> Path:
    """Where files for the user are written: `$FAIRCXR_OUTPUT` or `_output/` at the project root."""
    return Path(os.environ.get("FAIRCXR_OUTPUT", PROJECT_ROOT / "_output"))


def memory() -> joblib.Memory:
    """joblib memory under the cache folder (results keyed on their arguments)."""
    import joblib  # imported here: a command that fails on its config answers before loading it

    # joblib's note that hashing large arguments is slow is noise in the user's log (the result is right)
    warnings.filterwarnings("ignore", "Persisting input arguments took", UserWarning)
    joblib_log = logging.getLogger("joblib")
    if not any(isinstance(f, DamagedEntryFilter) for f in joblib_log.filters):
        joblib_log.addFilter(DamagedEntryFilter())
    return joblib.Memory(cache_dir() / "joblib", verbose=0)


class DamagedEntryFilter(logging.Filter):
    """joblib's « Exception while loading results » (a cache file cut short by a full disk or a killed copy)
    comes with the call's arguments and a traceback that reads as a crash; joblib then recomputes the
    entry and overwrites it. Say that in one line (the whole message with --verbose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Exception while loading results" not in message:
            return True
        from pipeline import progress

        if progress.verbose():
            return True
        func = re.search(r"func=<function (\w+)", message)
        where = re.search(r"location=([^)\]]+)", message)
        name = func.group(1) if func else "a result"
        folder = f" in {where.group(1)}" if where else ""
        progress.note(f"cache entry {name}{folder} unreadable (a file cut short?): recomputed")
        return False


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` on success only."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a file for the user is 0644 like any other
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def file_digest(path: Path) -> str:
    """blake2b digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def combined_digest(parts: Iterable[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def up_to_date(target: Path, key: str) -> bool:
    """True when `target` was written from these inputs (`key`, see `record_written`) and has not changed since."""
    record = cache_dir() / "render" / f"{target.name}.written"
    return target.is_file() and record.is_file() and \
        record.read_text(encoding="utf-8") == f"{key} {file_digest(target)}"


def record_written(target: Path, key: str) -> None:
    """Remember that `target` was just written from the inputs `key`."""
    atomic_write_text(cache_dir() / "render" / f"{target.name}.written", f"{key} {file_digest(target)}")


def code_version(*modules: str) -> str:
    """Digest of some pipeline modules' source (dotted names under `pipeline`, e.g. "fairness.metrics"):
    part of a cache key, so that a change to the code that computes a result invalidates it (joblib
    alone only watches the cached function's body)."""
    here = Path(__file__).parent
    return combined_digest((here / f"{m.replace('.', '/')}.py").read_text(encoding="utf-8") for m in modules)


def pipeline_source() -> str:
    """Digest of every pipeline module (path and source): part of the key of whatever the report computes
    from the study (frozen pages, a document's outputs, chart specs)."""
    here = Path(__file__).parent
    return combined_digest(f"{p.relative_to(here)}:{p.read_text(encoding='utf-8')}" for p in sorted(here.rglob("*.py")))


def per_study(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`fn(ctx)` computed once per study and kept in `ctx.analyses`: the study stores its analyses with
    itself (`study.run` computes them), so a document's kernel loads them instead of computing them.
    A context without `analyses` (a test's stand-in) is memoised per process, by data and config."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    results: dict[tuple[str, str], Any] = {}

    @functools.wraps(fn)
    def once(ctx: Any) -> Any:
        stored = getattr(ctx, "analyses", None)
        if isinstance(stored, dict):
            if name not in stored:
                stored[name] = fn(ctx)
            return stored[name]
        key = (str(getattr(ctx, "data_fingerprint", id(ctx.frame))), repr(ctx.config))
        if key not in results:
            results[key] = fn(ctx)
        return results[key]

    return once
