"""Render the report (HTML, PDF) and the slides: with Quarto when installed, else offline.

The offline fallback executes each document once (one Jupyter kernel), then converts it with
pandoc (`--fail-if-warnings`, so a missing resource is an error, never a silent CDN link):
HTML self-contained with MathML, PDF through Typst, slides through reveal.js 5 inlined.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from pipeline.cache import (
    atomic_path,
    atomic_write_text,
    cache_dir,
    combined_digest,
    pipeline_source,
    record_written,
    up_to_date,
)
from pipeline.render import slides_pdf
from pipeline.render.qmd import (
    INLINE,
    Cell,
    Document,
    Emitter,
    RenderError,
    execute,
    fence_state,
    inline_vega_library,
    parse,
    split_front_matter,
    to_markdown,
)

TEMPLATES = Path(__file__).parent / "templates"


OUTPUTS = ("report.html", "report.pdf", "slides.html")


EXTENSIONS = {"html": "html", "revealjs": "html", "typst": "pdf"}


ALIASES = {"pdf": "typst", "html5": "html"}


MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
             "octobre", "novembre", "décembre")


SLIDE_FONT_PT = 30  # keep in line with templates/slides.css


REVEAL_TABLE_ROWS = ('top-edge: "ascender", bottom-edge: "descender")\n'
                     "#show table: set par(leading: 0.2em)\n#show table: set table(inset: (x: 0.5em, y: 0.3em))")


REVEAL_SKIP = {"theme", "embed-resources", "self-contained", "css", "fig-width", "fig-height", "incremental",
               "slide-level", "toc", "number-sections", "html-math-method", "footer", "logo"}


class SlideOverflowWarning(UserWarning):
    """A slide's content is taller than the slide (reveal.js would clip it silently)."""


def render_all(project_dir: Path, outputs: tuple[str, ...] = OUTPUTS,
               use_quarto: bool | None = None) -> list[Path]:
    """Render `outputs` (names under the output folder, e.g. "report.pdf") of a Quarto project.

    Uses Quarto when it is on PATH (unless use_quarto is False), else the offline fallback.
    Each document is executed once for all its outputs in the fallback.
    """
    project = Path(project_dir).resolve()
    plan: dict[str, list[str]] = {}
    for name in outputs:
        stem, _, ext = name.rpartition(".")
        qmd = project / f"{stem}.qmd"
        if not qmd.is_file():
            raise RenderError(f"cannot make {name}: {qmd} does not exist")
        plan.setdefault(stem, []).append(_format_for(qmd, ext))
    written: list[Path] = []
    for stem, formats in plan.items():
        written += render_file(project / f"{stem}.qmd", formats, use_quarto=use_quarto, project_dir=project)
    written += slides_pdf.slides_pdfs(written)  # _output/slides.pdf for the jury (headless Chromium)
    return written


def render_file(qmd: Path, formats: list[str], use_quarto: bool | None = None,
                project_dir: Path | None = None) -> list[Path]:
    """Render one document to `formats` ("html", "typst" or "pdf", "revealjs") in the output folder."""
    qmd = Path(qmd).resolve()
    project = Path(project_dir).resolve() if project_dir else _project_of(qmd)
    formats = [ALIASES.get(f, f) for f in formats]
    unknown = [f for f in formats if f not in EXTENSIONS]
    if unknown:
        raise RenderError(f"{qmd.name}: unsupported format(s) {unknown}; use html, typst (pdf) or revealjs")
    out_dir = project / (_project_config(project).get("output-dir") or "_output")
    if use_quarto is None:
        use_quarto = shutil.which("quarto") is not None
    if use_quarto:
        return _render_quarto(qmd, formats, project, out_dir)
    return _render_fallback(qmd, formats, project, out_dir)


def _project_of(qmd: Path) -> Path:
    for folder in qmd.parents:
        if (folder / "_quarto.yml").is_file():
            return folder
    return qmd.parent


def _load_yaml(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def _project_config(project: Path) -> dict[str, Any]:
    return _load_yaml(project / "_quarto.yml").get("project") or {}


def project_meta(project: Path) -> dict[str, Any]:
    """`_quarto.yml` without its `project:` key: the metadata every document inherits."""
    meta = dict(_load_yaml(project / "_quarto.yml"))
    meta.pop("project", None)
    return meta


def _format_for(qmd: Path, ext: str) -> str:
    if ext == "pdf":
        return "typst"
    meta, _ = split_front_matter(qmd.read_text(encoding="utf-8"))
    fmt = meta.get("format") or {}
    return "revealjs" if "revealjs" in (fmt if isinstance(fmt, (dict, str)) else {}) else "html"


def _rel(path: Path, project: Path) -> str:
    try:
        return str(path.relative_to(project))
    except ValueError:
        return str(path)


def _render_quarto(qmd: Path, formats: list[str], project: Path, out_dir: Path) -> list[Path]:
    """`quarto render FILE --to f1,f2`; outputs are named FILE-stem + .html/.pdf (Typst gives a PDF)."""
    t0 = time.perf_counter()
    print(f"quarto render {_rel(qmd, project)} --to {','.join(formats)}…", flush=True)
    done = subprocess.run(["quarto", "render", str(qmd), "--to", ",".join(formats)], cwd=project,
                          env=quarto_env(project))
    if done.returncode != 0:
        raise RenderError(f"quarto render {qmd.name} failed (exit {done.returncode}); see its messages above")
    written = []
    for fmt in formats:
        name = f"{qmd.stem}.{EXTENSIONS[fmt]}"
        found = next((p for p in (out_dir / name, qmd.parent / name) if p.is_file()), None)
        if found is None:
            raise RenderError(f"quarto render {qmd.name} did not produce {name}")
        target = out_dir / name
        if found != target:  # a project without output-dir writes next to the source
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(found, target)
        if fmt == "revealjs":
            check_slides_in_browser(target, parse(qmd, project_meta(project)))
        written.append(target)
        print(f"wrote {_rel(target, project)} in {time.perf_counter() - t0:.1f} s", flush=True)
    return written


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


def quarto_env(project: Path) -> dict[str, str]:
    """Quarto's environment when this pipeline calls it: its Python (for the documents' Jupyter kernel
    and the pre-render step) is this interpreter unless QUARTO_PYTHON names another; a `make report`
    from a shell without the virtual environment activated works like one with it."""
    return {**kernel_env(project), "QUARTO_PYTHON": os.environ.get("QUARTO_PYTHON") or sys.executable}


def kernel_env(project: Path) -> dict[str, str]:
    """The kernel imports the project's modules and this `pipeline`, whatever the current folder."""
    paths = [str(project), str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def execution_key(doc: Document) -> str | None:
    """What a document's outputs depend on, prose excluded: its cells and inline expressions in order, the
    whole `pipeline` code, the study (config, data files, code: `study.study_key`) and the FAIRCXR_*
    settings. None when the study config cannot be read (the document then always executes)."""
    from pipeline.config import ConfigError, load_config
    from pipeline.study import study_key

    try:
        study = study_key(load_config())
    except (ConfigError, OSError, ValueError) as err:
        print(f"note: {doc.path.name} is executed without reuse ({err})", file=sys.stderr)
        return None
    parts = [repr(p.source) + repr(p.options) if isinstance(p, Cell) else repr(INLINE.findall(p.text))
             for p in doc.parts]
    settings = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("FAIRCXR_"))
    return combined_digest([sys.version, study, *settings, repr(doc.meta.get("execute")), *parts,
                            pipeline_source()])


def _execute_or_reuse(doc: Document, qmd: Path, project: Path) -> list[Any]:
    """Execute the document, or reuse its last outputs when nothing but prose changed since (the writing loop)."""
    key = execution_key(doc)
    stored = cache_dir() / "render" / f"{qmd.stem}-{key}.json" if key else None
    if stored is not None and stored.is_file():
        print(f"reusing the outputs of {qmd.name}'s cells: only its prose changed since they were computed",
              flush=True)
        return json.loads(stored.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    n = len(doc.includes)
    print(f"executing {qmd.name}" + (f" ({n} chapter{'s' * (n > 1)})" if n else "") + "…", flush=True)
    results = execute(doc, cwd=qmd.parent, env=kernel_env(project))
    print(f"executed {qmd.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    if stored is not None:
        atomic_write_text(stored, json.dumps(results))
    return results


def _render_fallback(qmd: Path, formats: list[str], project: Path, out_dir: Path) -> list[Path]:
    doc = parse(qmd, project_meta(project))
    build = out_dir / ".build" / qmd.stem
    shutil.rmtree(build, ignore_errors=True)
    results = _execute_or_reuse(doc, qmd, project)
    templates = [t.read_bytes().hex() for t in sorted(TEMPLATES.iterdir()) if t.is_file()]
    written = []
    for fmt in formats:
        t1 = time.perf_counter()
        target = out_dir / f"{qmd.stem}.{EXTENSIONS[fmt]}"
        markdown = to_markdown(doc, results, Emitter(fmt, build / f"{fmt}-media"))
        key = combined_digest([fmt, str(target), markdown, json.dumps(results), repr(doc.meta), *templates,
                               Path(__file__).read_text(encoding="utf-8")])
        if up_to_date(target, key):
            print(f"{_rel(target, project)} is up to date", flush=True)
            written.append(target)
            continue
        detail = WRITERS[fmt](markdown, target, build, doc)
        record_written(target, key)
        if fmt == "revealjs" and not check_slides_in_browser(target, doc):
            check = to_markdown(doc, results, Emitter("typst", build / "check-media"))
            _warn_overflows(check, build / "check", doc)
        written.append(target)
        print(f"wrote {_rel(target, project)}{detail} in {time.perf_counter() - t1:.1f} s", flush=True)
    return written


def _date(value: Any, lang: str, path: Path) -> Any:
    day = {"today": dt.date.today(),
           "last-modified": dt.date.fromtimestamp(path.stat().st_mtime)}.get(str(value))
    if day is None:
        return value
    return f"{day.day} {MONTHS_FR[day.month - 1]} {day.year}" if lang == "fr" else day.isoformat()


def pandoc_meta(doc: Document) -> dict[str, Any]:
    """The metadata pandoc needs, paths made absolute, Quarto's French defaults filled in."""
    meta = doc.meta
    keep = {k: meta[k] for k in ("title", "subtitle", "author", "date", "lang", "abstract", "keywords",
                                 "link-citations", "nocite", "reference-section-title", "toc-title")
            if k in meta}
    lang = str(meta.get("lang", "en"))[:2]
    if "date" in keep:
        keep["date"] = _date(keep["date"], lang, doc.path)
    for key in ("bibliography", "csl"):
        if key in meta:
            files = meta[key] if isinstance(meta[key], list) else [meta[key]]
            keep[key] = [str((doc.path.parent / f).resolve()) for f in files]
    keep.setdefault("reference-section-title", "Références" if lang == "fr" else "References")
    keep.setdefault("toc-title", "Table des matières" if lang == "fr" else "Contents")
    return keep


def run_pandoc(markdown: str, out: Path, to: str, args: list[str], build: Path, meta: dict[str, Any],
               doc: Document) -> None:
    """pandoc Markdown → `to`, failing on any warning (a missing file, an unresolved citation...)."""
    build.mkdir(parents=True, exist_ok=True)
    source = build / f"{doc.path.stem}.{to}.md"
    source.write_text(markdown, encoding="utf-8")
    meta_file = build / f"{doc.path.stem}.{to}.meta.yml"
    meta_file.write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    cmd = [pandoc_path(), str(source), "-f", "markdown", "-t", to, "--standalone", "--fail-if-warnings",
           "--metadata-file", str(meta_file), "--lua-filter", str(TEMPLATES / "callouts.lua"),
           "--lua-filter", str(TEMPLATES / "authorship.lua"),
           "--resource-path", os.pathsep.join([str(build), str(doc.path.parent)]), "-o", str(out), *args]
    if meta.get("bibliography"):
        cmd.append("--citeproc")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RenderError(f"pandoc failed for {doc.path.name} → {to} (exit {done.returncode}):\n"
                          f"{done.stderr.strip()}")


def _options(doc: Document, fmt: str) -> dict[str, Any]:
    return (doc.meta.get("format") or {}).get(fmt) or {}


def _toc_args(opts: dict[str, Any], default_depth: int = 3) -> list[str]:
    return ["--toc", f"--toc-depth={opts.get('toc-depth', default_depth)}"] if opts.get("toc") else []


def write_html(markdown: str, target: Path, build: Path, doc: Document) -> str:
    opts = _options(doc, "html")
    args = ["--embed-resources", "--mathml", "--css", str(TEMPLATES / "report.css"), *_toc_args(opts)]
    args += ["--number-sections"] if opts.get("number-sections") else []
    with atomic_path(target) as tmp:
        html = tmp.with_suffix(".html")
        run_pandoc(markdown, html, "html5", args, build, pandoc_meta(doc), doc)
        inline_vega_library(html)
        os.replace(html, tmp)
    return ""


def typst_source(markdown: str, typ: Path, build: Path, doc: Document, header: str,
                 meta: dict[str, Any] | None = None) -> None:
    """pandoc Markdown → Typst with pandoc's template and a raw Typst header."""
    opts = _options(doc, "typst")
    meta = meta if meta is not None else pandoc_meta(doc)
    meta.update({"papersize": opts.get("papersize", "a4"), "fontsize": opts.get("fontsize", "11pt"),
                 "margin": opts.get("margin", {"x": "2cm", "y": "2cm"})})
    numbering = opts.get("section-numbering") or ("1.1" if opts.get("number-sections") else None)
    if numbering:
        meta["section-numbering"] = numbering
    if "mainfont" in opts:
        meta["mainfont"] = opts["mainfont"]
    build.mkdir(parents=True, exist_ok=True)
    head = build / f"{typ.stem}-header.typ"
    head.write_text("\n".join([header, *_header_includes(opts, doc.path.parent)]), encoding="utf-8")
    run_pandoc(markdown, typ, "typst", [*_toc_args(opts), "--include-in-header", str(head)], build, meta, doc)


def _header_includes(opts: dict[str, Any], folder: Path) -> list[str]:
    """The format's `include-in-header` as Quarto reads it: a path, `{file: path}` or `{text: ...}`,
    or a list of them (paths relative to the document)."""
    items = opts.get("include-in-header") or []
    out = []
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, dict) and "text" in item:
            out.append(str(item["text"]))
            continue
        path = folder / str(item["file"] if isinstance(item, dict) else item)
        if not path.is_file():
            raise RenderError(f"include-in-header: {path} does not exist (format options of {folder})")
        out.append(path.read_text(encoding="utf-8"))
    return out


def _pages(pdf: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes()))


def write_pdf(markdown: str, target: Path, build: Path, doc: Document) -> str:
    import typst

    typ = build / f"{target.stem}.typ"
    typst_source(markdown, typ, build, doc, (TEMPLATES / "report-header.typ").read_text(encoding="utf-8"))
    with atomic_path(target) as tmp:
        pdf = tmp.with_suffix(".pdf")
        try:
            typst.compile(str(typ), output=str(pdf), root="/")
        except Exception as err:  # typst.TypstError and friends: name the intermediate file
            raise RenderError(f"typst failed on {typ}:\n{err}") from None
        pages = _pages(pdf)
        os.replace(pdf, tmp)
    return f" ({pages} pages)"


def write_slides(markdown: str, target: Path, build: Path, doc: Document) -> str:
    opts = _options(doc, "revealjs")
    args = ["--embed-resources", "--mathml", f"--slide-level={opts.get('slide-level', 2)}",
            "--css", str(TEMPLATES / "slides.css"), "-V", f"revealjs-url={revealjs_dir()}",
            "-V", f"theme={opts.get('theme', 'white')}"]
    args += ["--incremental"] if opts.get("incremental") else []
    for key, value in opts.items():
        if key not in REVEAL_SKIP and not isinstance(value, (dict, list)):
            name = re.sub(r"-(\w)", lambda m: m.group(1).upper(), key)
            args += ["-V", f"{name}={str(value).lower() if isinstance(value, bool) else value}"]
    meta = pandoc_meta(doc)
    if isinstance(opts.get("title-slide-attributes"), dict):  # e.g. data-notes: the title slide's speaker notes
        meta["title-slide-attributes"] = opts["title-slide-attributes"]
    with atomic_path(target) as tmp:
        html = tmp.with_suffix(".html")
        run_pandoc(markdown, html, "revealjs", args, build, meta, doc)
        inline_vega_library(html)
        os.replace(html, tmp)
    slides = sum(1 for line in markdown.splitlines() if line.startswith("## "))
    return f" ({slides} slides)"


WRITERS = {"html": write_html, "typst": write_pdf, "revealjs": write_slides}


def _slide_chunks(markdown: str) -> list[tuple[str, str]]:
    """(title, markdown) per `##` slide, fenced code ignored; text before the first slide dropped."""
    chunks: list[tuple[str, list[str]]] = []
    state = None
    for line in markdown.split("\n"):
        code, state = fence_state(state, line)
        if not code and line.startswith("## "):
            chunks.append((line[3:].split("{")[0].strip(), []))
        if chunks:
            chunks[-1][1].append(line)
    return [(title, "\n".join(lines)) for title, lines in chunks]


def slide_overflows(markdown: str, build: Path, doc: Document, width: int = 1280,
                    height: int = 720) -> list[str]:
    """Titles of slides whose content does not fit one slide.

    Reveal.js clips an overflowing slide silently; Typst breaks it onto more pages, which we count:
    all slides are set in one Typst document at slide size (1 pt per CSS pixel, the font size of
    slides.css), each starting a page and marking it. Charts keep their on-screen size (their PNG
    says 216 ppi for a 3x render).
    """
    import typst

    chunks = _slide_chunks(markdown)
    pieces = []
    for i, (_, chunk) in enumerate(chunks):
        smaller = ".smaller" in chunk.split("\n", 1)[0]  # as in slides.css: .smaller tables in smaller type
        table_pt = SLIDE_FONT_PT * (0.6 if smaller else 0.62)
        pieces.append(f"```{{=typst}}\n#pagebreak(weak: true)\n#context [#metadata(("
                      f"i: {i}, page: here().page())) <slide-start>]\n#[\n"
                      f"#show table: set text(size: {table_pt:.0f}pt, {REVEAL_TABLE_ROWS}\n```\n\n{chunk}\n\n"
                      "```{=typst}\n]\n```")
    if not pieces:
        return []
    pieces.append("```{=typst}\n#context [#metadata((i: -1, page: here().page())) <slide-start>]\n```")
    # In the body, not the header: pandoc's template sets the page and text size after the header.
    # Margins as reveal.js lays a 1280x720 slide out (title 25 px from the left edge).
    setup = (f"```{{=typst}}\n#set page(width: {width}pt, height: {height}pt, margin: (x: 25pt, y: 20pt), "
             f"numbering: none)\n#set text(size: {SLIDE_FONT_PT}pt)\n#set figure(numbering: none)\n```")
    typ = build / "slides-check.typ"
    meta = {k: v for k, v in pandoc_meta(doc).items() if k in ("lang", "bibliography", "link-citations")}
    meta["suppress-bibliography"] = True
    typst_source("\n\n".join([setup, *pieces]), typ, build, doc, "", meta=meta)
    marks = json.loads(typst.query(str(typ), "<slide-start>", field="value", root="/"))
    starts = [m["page"] for m in marks]
    # The end mark sits on the last slide's last page: that slide spans end - start + 1 pages.
    spans = [b - a for a, b in itertools.pairwise(starts)]
    spans[-1] += 1
    return [title for (title, _), span in zip(chunks, spans, strict=True) if span > 1]


def check_slides_in_browser(slides: Path, doc: Document) -> bool:
    """Warn for each slide whose content the browser draws outside the slide; False without a browser."""
    from pipeline.render.browser import browser, overflowing_slides

    if browser() is None:
        return False
    try:
        boxes = overflowing_slides(slides, **_slide_size(doc))
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as err:  # never block the slides
        print(f"warning: slide overflow check skipped: {err}", file=sys.stderr)
        return False
    size = _slide_size(doc)
    for box in boxes:
        path, line = _slide_origin(doc, box.title)
        warnings.warn_explicit(f"slide '{box.title}' overflows the {size['width']}x{size['height']} slide (the "
                               f"browser draws it to {box.right:.0f}x{box.bottom:.0f} px); shorten it or move "
                               "content to a backup slide", SlideOverflowWarning, str(path), line)
    return True


def _warn_overflows(markdown: str, build: Path, doc: Document) -> None:
    try:
        titles = slide_overflows(markdown, build, doc, **_slide_size(doc))
    except (RenderError, RuntimeError, ValueError) as err:  # the check must never block the slides
        print(f"warning: slide overflow check skipped: {err}", file=sys.stderr)
        return
    for title in titles:
        path, line = _slide_origin(doc, title)
        warnings.warn_explicit(f"slide '{title}' overflows the slide; shorten it or move content to a "
                               "backup slide", SlideOverflowWarning, str(path), line)


def _slide_origin(doc: Document, title: str) -> tuple[Path, int]:
    """Source file and line of the `## title` heading (for the warning), else the document."""
    def plain(text: str) -> str:  # the browser shows typographic apostrophes and collapsed spaces
        return re.sub(r"\s+", " ", text.replace("\u2019", "'")).strip()

    for part in doc.parts:
        for i, line in enumerate(getattr(part, "text", "").split("\n")):
            if line.startswith("## ") and plain(line[3:].split("{")[0]) == plain(title):
                return part.origins[i]
    return doc.path, 1


def _slide_size(doc: Document) -> dict[str, int]:
    opts = _options(doc, "revealjs")
    return {"width": int(opts.get("width", 1280)), "height": int(opts.get("height", 720))}
