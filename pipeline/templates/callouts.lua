-- Callouts, figure and table captions for the offline renderer (pandoc Lua filter).
-- HTML keeps the divs (styled by report.css); Typst gets coloured blocks.
local fills = { note = "#eaf1fb", tip = "#e9f5ec", warning = "#fdf3e1", important = "#fbe9e7",
                caution = "#fdf3e1" }
local strokes = { note = "#2f6fd0", tip = "#2e8b57", warning = "#d08a00", important = "#c0392b",
                  caution = "#d08a00" }

function Div(el)
  if FORMAT ~= "typst" then return nil end
  for _, cls in ipairs(el.classes) do
    local kind = cls:match("^callout%-(%a+)$")
    if kind and fills[kind] then
      local open = string.format(
        '#block(fill: rgb("%s"), stroke: (left: 3pt + rgb("%s")), inset: 10pt, radius: 3pt, width: 100%%)[',
        fills[kind], strokes[kind])
      local blocks = { pandoc.RawBlock("typst", open) }
      for _, b in ipairs(el.content) do table.insert(blocks, b) end
      table.insert(blocks, pandoc.RawBlock("typst", "]"))
      return blocks
    end
  end
  if el.classes:includes("callout-title") then
    return pandoc.Para({ pandoc.Strong(pandoc.utils.blocks_to_inlines(el.content)) })
  end
  if el.classes:includes("table-caption") or el.classes:includes("figure-caption") then
    return pandoc.Para({ pandoc.Emph(pandoc.utils.blocks_to_inlines(el.content)) })
  end
  return nil
end
