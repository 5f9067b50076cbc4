"""Slide overflow measured on what the browser draws: headless Chromium lays out reveal.js slides.

Reveal.js clips a slide whose content is taller (or wider) than the slide, silently. For each slide, a
script added to a copy of the HTML shows it, then measures every visible element against the slide's
box (width x height in CSS pixels, at reveal.js's own scale). Chromium runs with `--dump-dom`, and the
script leaves its measures in the DOM. Written by hand: no Python package drives a local Chromium
without downloading a browser (playwright's own), and `--dump-dom` needs nothing more.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


MEASURE_ATTR = "data-slide-measures"


TOLERANCE_PX = 2  # sub-pixel rounding and anti-aliasing; a real overflow is many pixels


# Measures every slide once reveal.js is ready and the charts (vega-embed, asynchronous) are drawn.
MEASURE_JS = """
<script>
(function () {
  function measure() {
    var out = [];
    var box = document.querySelector('.reveal .slides');
    var slides = Reveal.getSlides();
    for (var i = 0; i < slides.length; i++) {
      var section = slides[i];
      var where = Reveal.getIndices(section);
      Reveal.slide(where.h, where.v);
      var scale = Reveal.getScale() || 1;
      var frame = box.getBoundingClientRect();
      var top = 0, bottom = 0, left = 0, right = 0;
      var walker = section.querySelectorAll('*');
      for (var k = 0; k < walker.length; k++) {
        var el = walker[k];
        var clipped = false;
        for (var p = el.parentElement; p && p !== section; p = p.parentElement) {
          var o = getComputedStyle(p).overflow;
          if (o !== 'visible') { clipped = true; break; }
        }
        if (clipped) continue;
        var style = getComputedStyle(el);
        if (style.display === 'none' || style.visibility === 'hidden') continue;
        var r = el.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) continue;
        top = Math.min(top, (r.top - frame.top) / scale);
        left = Math.min(left, (r.left - frame.left) / scale);
        bottom = Math.max(bottom, (r.bottom - frame.top) / scale);
        right = Math.max(right, (r.right - frame.left) / scale);
      }
      // The figures (charts, images): the union of their boxes, nested SVG elements ignored.
      var fx0 = Infinity, fy0 = Infinity, fx1 = -Infinity, fy1 = -Infinity, chart = false;
      var figures = section.querySelectorAll('img, canvas, svg');
      for (var f = 0; f < figures.length; f++) {
        if (figures[f].parentElement && figures[f].parentElement.closest('svg')) continue;
        var b = figures[f].getBoundingClientRect();
        if (b.width * b.height < 100) continue;
        fx0 = Math.min(fx0, b.left); fy0 = Math.min(fy0, b.top);
        fx1 = Math.max(fx1, b.right); fy1 = Math.max(fy1, b.bottom);
        if (figures[f].tagName.toLowerCase() !== 'img') chart = true;
      }
      // The smallest chart text as drawn (SVG text: its font size times the SVG's scale on screen), in slide px.
      var smallest = 0, smallestText = '';
      var texts = section.querySelectorAll('svg text');
      for (var t = 0; t < texts.length; t++) {
        var label = texts[t].textContent.trim();
        var m = texts[t].getScreenCTM();
        if (!label || !m || getComputedStyle(texts[t]).visibility === 'hidden') continue;
        var px = parseFloat(getComputedStyle(texts[t]).fontSize) * Math.sqrt(m.a * m.a + m.b * m.b) / scale;
        if (!smallest || px < smallest) { smallest = px; smallestText = label; }
      }
      var heading = section.querySelector('h1, h2, h3');
      out.push({index: i, title: heading ? heading.textContent.trim() : '',
                top: top, left: left, bottom: bottom, right: right,
                figure_width: fx1 > fx0 ? (fx1 - fx0) / scale : 0,
                figure_height: fy1 > fy0 ? (fy1 - fy0) / scale : 0, chart: chart,
                chart_text_px: smallest, chart_text: smallestText});
    }
    var cfg = Reveal.getConfig();
    document.body.setAttribute('ATTR', JSON.stringify({width: cfg.width, height: cfg.height, slides: out}));
  }
  function later() {
    Reveal.configure({transition: 'none'});
    // reveal.js loads a slide's images (data-src) only near the current slide: load them all to measure them
    var lazy = document.querySelectorAll('.reveal img[data-src]');
    for (var i = 0; i < lazy.length; i++) {
      if (!lazy[i].getAttribute('src')) lazy[i].setAttribute('src', lazy[i].getAttribute('data-src'));
    }
    setTimeout(measure, 1500);
  }
  function start() {
    if (typeof Reveal === 'undefined') { setTimeout(start, 100); return; }
    if (Reveal.isReady && Reveal.isReady()) later(); else Reveal.on('ready', later);
  }
  window.addEventListener('load', start);
})();
</script>
""".replace("ATTR", MEASURE_ATTR)


@dataclass(frozen=True)
class SlideBox:
    """What the browser drew on one slide, in slide pixels (0, 0 is the slide's top left corner)."""

    index: int
    title: str
    top: float
    left: float
    bottom: float
    right: float
    figure_width: float = 0.0  # the box around the slide's charts and images (0: none)
    figure_height: float = 0.0
    chart: bool = False  # a drawn chart (SVG, canvas) among the figures, not only images
    chart_text_px: float = 0.0  # the smallest chart text as drawn, in slide pixels (0: no chart text)
    chart_text: str = ""  # that text

    def figure_share(self, width: int, height: int) -> float:
        """Share of the slide's area that its figures cover (charts, images)."""
        return self.figure_width * self.figure_height / (width * height)

    def chart_text_under(self, minimum_px: float) -> bool:
        """Some chart text is drawn smaller than `minimum_px` slide pixels (sub-pixel rounding tolerated)."""
        return 0 < self.chart_text_px < minimum_px - 0.05

    def overflows(self, width: int, height: int) -> bool:
        return (self.bottom > height + TOLERANCE_PX or self.right > width + TOLERANCE_PX
                or self.top < -TOLERANCE_PX or self.left < -TOLERANCE_PX)


def browser() -> str | None:
    """The Chromium (or Chrome) command on PATH, or None."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def measure_slides(html: Path, width: int = 1280, height: int = 720,
                   timeout: int = 120) -> tuple[dict[str, int], list[SlideBox]]:
    """Lay out `html` (reveal.js slides) in headless Chromium: (slide size, one box per slide)."""
    command = browser()
    if command is None:
        raise RuntimeError("no Chromium on PATH (Debian: apt install chromium)")
    source = Path(html).read_text(encoding="utf-8")
    at = source.rfind("</body>")
    page = source[:at] + MEASURE_JS + source[at:] if at >= 0 else source + MEASURE_JS
    with tempfile.TemporaryDirectory(prefix="slides-measure-") as tmp:
        copy = Path(tmp) / "slides.html"
        copy.write_text(page, encoding="utf-8")
        done = subprocess.run([command, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}",
                               "--virtual-time-budget=20000", "--dump-dom", copy.as_uri()],
                              capture_output=True, text=True, timeout=timeout)
    found = re.search(rf'{MEASURE_ATTR}="([^"]*)"', done.stdout)
    if found is None:
        raise RuntimeError(f"Chromium did not lay out {html} (exit {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    data = json.loads(html_lib.unescape(found.group(1)))  # the DOM dump escapes the attribute (&quot;, &nbsp;)
    size = {"width": int(data["width"]), "height": int(data["height"])}
    return size, [SlideBox(**{**s, "title": " ".join(s["title"].split())}) for s in data["slides"]]


def overflowing_slides(html: Path, width: int = 1280, height: int = 720) -> list[SlideBox]:
    """The slides of `html` whose drawn content leaves the slide's box, as the browser lays them out."""
    size, boxes = measure_slides(html, width, height)
    return [b for b in boxes if b.overflows(size["width"], size["height"])]
