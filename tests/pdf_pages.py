"""How long a rendered report's body is, read from the PDF with poppler's `pdfinfo` and `pdftotext`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest


def body_pages(pdf: Path) -> int:
    """PDF pages before « Références » (the page it starts on counts when the body ends on it)."""
    if shutil.which("pdftotext") is None or shutil.which("pdfinfo") is None:
        pytest.skip("pdftotext and pdfinfo (Debian: poppler-utils) are not installed")
    n_pages = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(pdf)], capture_output=True,
                                                                  text=True).stdout).group(1))
    for page in range(1, n_pages + 1):
        text = subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), str(pdf), "-"], capture_output=True,
                              text=True).stdout
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if "Références" in lines:  # the heading alone on its line (the table of contents adds dots and a page)
            before = lines[:lines.index("Références")]
            return page - 1 + bool([line for line in before if not line.isdigit()])
    raise AssertionError("no « Références » heading in the PDF")
