-- Who wrote what, shown the same way in every output (pandoc Lua filter, for Quarto and the offline renderer).
-- A `::: {.generated}` div holds prose the tool wrote from the results: a thin blue rule on its left and a
-- small « généré » label (in the margin of the PDF; none on a slide), in HTML, reveal.js and Typst alike.
-- The student's own parts are the green « Votre … » boxes; everything else is theirs once they edit it.
local LABEL = "généré"
local RULE = "#8aa9cf"
local INK = "#5b6b83"

local function generated(el)
  if not el.classes:includes("generated") then return nil end
  if pandoc.utils.stringify(el.content):match("^%s*$") then return {} end  -- nothing generated: no lone label
  if FORMAT == "typst" then
    local blocks = { pandoc.RawBlock("typst", string.format(
      '#block(stroke: (left: 1.5pt + rgb("%s")), inset: (left: 8pt, y: 2pt), width: 100%%, breakable: true)['
        -- the label in the left margin: no line of the page spent on it
        .. '#place(top + left, dx: -1.75cm, dy: 2pt, box(width: 1.4cm, align(right, text(size: 6.5pt, '
        .. 'fill: rgb("%s"), hyphenate: false)[%s])))\n', RULE, INK, LABEL)) }
    for _, b in ipairs(el.content) do table.insert(blocks, b) end
    table.insert(blocks, pandoc.RawBlock("typst", "]"))
    return blocks
  end
  if FORMAT:match("html") or FORMAT:match("revealjs") then
    if not FORMAT:match("revealjs") then  -- a slide has no room for the label: its title slide explains the rule
      local label = pandoc.RawBlock("html", string.format(
        '<div class="generated-label" style="font-size: 0.7em; color: %s;">%s</div>', INK, LABEL))
      local content = { label }
      for _, b in ipairs(el.content) do table.insert(content, b) end
      el.content = content
    end
    local margin = FORMAT:match("revealjs") and "0" or "0.6em 0"  -- a slide has no height to spare
    el.attributes.style = string.format("border-left: 3px solid %s; padding-left: 0.6em; margin: %s;", RULE, margin)
    return el
  end
  return nil
end

return { { Div = generated } }
