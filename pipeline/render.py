"""Render the report (HTML, PDF) and the slides: with Quarto when installed, else offline.

The offline fallback executes each document once (one Jupyter kernel), then converts it with
pandoc (`--fail-if-warnings`, so a missing resource is an error, never a silent CDN link):
HTML self-contained with MathML, PDF through Typst, slides through reveal.js 5 inlined.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from .cache import atomic_path
from .qmd import Emitter, RenderError, execute, parse, to_markdown

TEMPLATES = Path(__file__).parent / "templates"
OUTPUTS = ("report.html", "report.pdf", "slides.html")
MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
             "octobre", "novembre", "décembre")
SLIDE_FONT_PT = 30  # keep in line with templates/slides.css
# Captions carry our own "Figure N :" numbers (the same in HTML and PDF); tables are set smaller.
REPORT_TYPST = """#set figure(numbering: none)
#set par(justify: true)
#show table: set text(size: 7.5pt)
#show table: set par(justify: false)"""


def _typst_header(build: Path, name: str, code: str) -> list[str]:
    """pandoc arguments that put raw Typst code in the document's header."""
    build.mkdir(parents=True, exist_ok=True)
    path = build / f"{name}-header.typ"
    path.write_text(code + "\n", encoding="utf-8")
    return ["--include-in-header", str(path)]


def pandoc_path() -> str:
    import pypandoc

    return pypandoc.get_pandoc_path()


def revealjs_dir() -> Path:
    """reveal.js 5.x shipped by the sphinx-revealjs wheel (pandoc's template targets reveal.js 5)."""
    import sphinx_revealjs

    path = Path(sphinx_revealjs.__file__).parent / "_static" / "revealjs"
    if not (path / "dist" / "reveal.js").exists():
        raise RenderError(f"reveal.js not found under {path}; reinstall sphinx-revealjs")
    return path


def project_meta(project: Path) -> dict[str, Any]:
    config = project / "_quarto.yml"
    meta = yaml.safe_load(config.read_text(encoding="utf-8")) if config.exists() else {}
    meta = dict(meta or {})
    meta.pop("project", None)
    return meta


def _pandoc_meta(meta: dict[str, Any], project: Path) -> dict[str, Any]:
    keep = {k: meta[k] for k in ("title", "subtitle", "author", "date", "lang", "link-citations")
            if k in meta}
    if keep.get("date") == "today":
        today = dt.date.today()
        keep["date"] = f"{today.day} {MONTHS_FR[today.month - 1]} {today.year}"
    if "bibliography" in meta:
        keep["bibliography"] = str((project / meta["bibliography"]).resolve())
    return keep


def _format_options(meta: dict[str, Any], fmt: str) -> dict[str, Any]:
    formats = meta.get("format", {})
    opts = formats.get(fmt, {}) if isinstance(formats, dict) else {}
    return opts if isinstance(opts, dict) else {}


def run_pandoc(markdown: str, out: Path, to: str, args: list[str], build: Path, meta: dict[str, Any]) -> None:
    build.mkdir(parents=True, exist_ok=True)
    source = build / f"{out.stem}.{to}.md"
    source.write_text(markdown, encoding="utf-8")
    meta_file = build / f"{out.stem}.{to}.meta.yml"
    meta_file.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    cmd = [pandoc_path(), str(source), "-f", "markdown", "-t", to, "--standalone", "--fail-if-warnings",
           "--metadata-file", str(meta_file), "--lua-filter", str(TEMPLATES / "callouts.lua"),
           "--resource-path", str(build), "-o", str(out), *args]
    if "bibliography" in meta:
        cmd.append("--citeproc")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RenderError(f"pandoc failed for {out.name} (exit {done.returncode}):\n{done.stderr.strip()}")


def _html(markdown: str, target: Path, build: Path, meta: dict[str, Any]) -> None:
    opts = _format_options(meta, "html")
    args = ["--embed-resources", "--mathml", "--css", str(TEMPLATES / "report.css"),
            f"--toc-depth={opts.get('toc-depth', 2)}"]
    args += ["--toc"] if opts.get("toc", True) else []
    args += ["--number-sections"] if opts.get("number-sections", True) else []
    with atomic_path(target) as tmp:
        run_pandoc(markdown, tmp.with_suffix(".html"), "html5", args, build, _pandoc_meta(meta, build.parents[1]))
        os.replace(tmp.with_suffix(".html"), tmp)


def _typst_source(markdown: str, out: Path, build: Path, meta: dict[str, Any], opts: dict[str, Any]) -> None:
    pmeta = _pandoc_meta(meta, build.parents[1])
    pmeta.update({"papersize": opts.get("papersize", "a4"), "fontsize": opts.get("fontsize", "11pt"),
                  "margin": opts.get("margin", {"x": "2cm", "y": "2cm"})})
    if opts.get("number-sections", True):
        pmeta["section-numbering"] = opts.get("section-numbering", "1.1.")
    args = ["--toc"] if opts.get("toc", True) else []
    run_pandoc(markdown, out, "typst", [*args, *_typst_header(build, "report", REPORT_TYPST)], build, pmeta)


def _pdf(markdown: str, target: Path, build: Path, meta: dict[str, Any]) -> int:
    import typst

    typ = build / f"{target.stem}.typ"
    _typst_source(markdown, typ, build, meta, _format_options(meta, "typst"))
    with atomic_path(target) as tmp:
        typst.compile(str(typ), output=str(tmp), root="/")
    return len(re.findall(rb"/Type\s*/Page\b", target.read_bytes()))


def _slides(markdown: str, target: Path, build: Path, meta: dict[str, Any]) -> None:
    opts = _format_options(meta, "revealjs")
    args = ["--embed-resources", "--mathml", "--slide-level", "2", "--css", str(TEMPLATES / "slides.css"),
            "-V", f"revealjs-url={revealjs_dir()}", "-V", f"theme={opts.get('theme', 'white')}",
            "-V", f"width={opts.get('width', 1280)}", "-V", f"height={opts.get('height', 720)}"]
    if opts.get("slide-number", True):
        args += ["-V", "slideNumber=true"]
    with atomic_path(target) as tmp:
        run_pandoc(markdown, tmp.with_suffix(".html"), "revealjs", args, build,
                   _pandoc_meta(meta, build.parents[1]))
        os.replace(tmp.with_suffix(".html"), tmp)


def slide_overflows(markdown: str, build: Path, meta: dict[str, Any], width: int = 1280,
                    height: int = 720) -> list[str]:
    """Titles of slides whose content does not fit one page (each slide set in Typst at slide size).

    Reveal.js clips an overflowing slide silently; Typst breaks it onto a second page instead, which
    we can count. Images keep their on-screen size (PNG rendered at 3x, so width / 3 points).
    """
    import typst

    def sized(match: re.Match) -> str:
        with Image.open(match.group(2)) as im:
            return f"![{match.group(1)}]({match.group(2)}){{width={im.width / 3:.0f}pt}}"

    markdown = re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)(\{[^}]*\})?", sized, markdown)
    chunks = re.split(r"^## ", markdown, flags=re.M)[1:]
    overflowing = []
    for i, chunk in enumerate(chunks):
        title = chunk.splitlines()[0].split("{")[0].strip()
        typ = build / f"slide-{i}.typ"
        smaller = ".smaller" in chunk.splitlines()[0]  # as in slides.css: .smaller tables at half size
        header = _typst_header(build, "slide", f"#set page(width: {width}pt, height: {height}pt, margin: 40pt)\n"
                               f"#set text(size: {SLIDE_FONT_PT}pt)\n#set figure(numbering: none)\n"
                               f"#show table: set text(size: {SLIDE_FONT_PT * (0.5 if smaller else 0.62):.0f}pt)")
        run_pandoc("## " + chunk, typ, "typst", header, build, {**meta, "suppress-bibliography": True})
        pdf = build / f"slide-{i}.pdf"
        typst.compile(str(typ), output=str(pdf), root="/")
        if len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes())) > 1:
            overflowing.append(title)
    return overflowing


def render_fallback(project: Path, outputs: tuple[str, ...] = OUTPUTS) -> list[Path]:
    """Execute report.qmd and slides.qmd once each and convert them offline."""
    project = project.resolve()
    out_dir, build = project / "_output", project / "_output" / ".build"
    shutil.rmtree(build, ignore_errors=True)
    written: list[Path] = []
    pmeta = project_meta(project)
    for name in ("report", "slides"):
        wanted = [o for o in outputs if o.startswith(name + ".")]
        if not wanted:
            continue
        t0 = time.perf_counter()
        doc = parse(project / f"{name}.qmd", pmeta)
        print(f"executing {name}.qmd ...", flush=True)
        results = execute(doc, cwd=project)
        for out in wanted:
            fmt = {"report.html": "html", "report.pdf": "typst", "slides.html": "revealjs"}[out]
            markdown = to_markdown(doc, results, Emitter(fmt, build / f"{name}-{fmt}-media"))
            target = out_dir / out
            if fmt == "html":
                _html(markdown, target, build, doc.meta)
                detail = ""
            elif fmt == "typst":
                detail = f" ({_pdf(markdown, target, build, doc.meta)} pages)"
            else:
                _slides(markdown, target, build, doc.meta)
                check = to_markdown(doc, results, Emitter("typst", build / "slides-check-media"))
                for title in slide_overflows(check, build / "slides-check", _pandoc_meta(doc.meta, project)):
                    warnings.warn(f"slides.qmd: slide '{title}' overflows the 1280x720 slide; shorten it "
                                  "or move content to a backup slide.", stacklevel=2)
                detail = f" ({len(re.findall(r'^## ', markdown, flags=re.M))} slides)"
            written.append(target)
            elapsed = time.perf_counter() - t0
            print(f"wrote {target.relative_to(project)}{detail} in {elapsed:.1f} s", flush=True)
    return written


def render_with_quarto(project: Path) -> list[Path]:
    """`quarto render` renders report.qmd (html + typst) and slides.qmd into _output/."""
    done = subprocess.run(["quarto", "render"], cwd=project)
    if done.returncode != 0:
        raise RenderError(f"quarto render failed (exit {done.returncode}); see its messages above")
    return [project / "_output" / o for o in OUTPUTS if (project / "_output" / o).exists()]


def render_all(project: Path, outputs: tuple[str, ...] = OUTPUTS,
               use_quarto: bool | None = None) -> list[Path]:
    """Render with Quarto when it is on PATH (unless use_quarto is False), else offline."""
    if use_quarto is None:
        use_quarto = shutil.which("quarto") is not None
    return render_with_quarto(Path(project)) if use_quarto else render_fallback(Path(project), outputs)
