"""Rendering: with Quarto when installed, else the offline fallback (nbclient + pandoc + Typst).

`renderer` (render the report and the slides; the fallback's reuse of cell outputs after a prose edit),
`qmd` (read and execute a `.qmd` without Quarto), `browser` (slide overflow measured in headless
Chromium), `timing` (render figures for the benchmark), `templates/` (CSS, Typst header, Lua filter).
May import: everything below it, `report.display` included.
"""
