"""The locked install: requirements.lock pins what requirements.txt asks for, with hashes, and is what is installed."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    lines = (ln.split("#", 1)[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines())
    return [Requirement(ln) for ln in lines if ln]


def _locked() -> list[tuple[str, str, Marker | None, int]]:
    """(name, version, marker, number of hashes) of each pinned entry of requirements.lock."""
    text = (ROOT / "requirements.lock").read_text()
    entries = []
    for block in re.split(r"\n(?=\S)", text):
        head = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;\\]+)(?:\s*;\s*([^\\\n]+))?", block)
        if head:
            marker = Marker(head.group(3).strip()) if head.group(3) else None
            entries.append((canonicalize_name(head.group(1)), head.group(2), marker, block.count("--hash=sha256:")))
    return entries


def _here() -> dict[str, str]:
    """The lock's version of each package for this Python and platform."""
    return {name: version for name, version, marker, _ in _locked() if marker is None or marker.evaluate()}


def test_every_requirement_is_pinned_within_its_bounds_for_this_python():
    here = _here()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in here, f"{req.name} is in requirements.txt but not in requirements.lock: run `make lock`"
        assert req.specifier.contains(here[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={here[name]} outside {req.specifier}: run `make lock`")


def test_every_pin_is_exact_and_hashed():
    entries = _locked()
    assert len(entries) > 50  # the whole dependency tree, not only the direct requirements
    assert all(n_hashes >= 1 for *_, n_hashes in entries), [e for e in entries if e[3] == 0]
    names = {name for name, *_ in entries}
    assert {"torch", "numpy", "scikit-learn", "fairlearn", "pandas"} <= names
    assert any(m is not None and "win32" in str(m) for *_, m, _ in entries)  # other platforms' packages too


def test_the_installed_packages_are_the_locked_ones():
    """`make` installs the lock: the running environment has exactly its versions (a stale .venv or an
    install from requirements.txt would take whatever was newest that day)."""
    wrong = {}
    for name, version in _here().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = ("locked", version, "absent")
            continue
        if installed.split("+")[0] != version.split("+")[0]:
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from requirements.lock (run `make setup`): {wrong}"
