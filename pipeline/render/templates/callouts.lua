-- Quarto-like callouts, captions and speaker notes for the offline renderer (pandoc Lua filter).
-- HTML and reveal.js: a div.callout with a title and a body (styled by report.css / slides.css).
-- Typst: a coloured, breakable block with a bold title.
local titles = {
  fr = { note = "Note", tip = "Astuce", warning = "Avertissement", important = "Important",
         caution = "Attention" },
  en = { note = "Note", tip = "Tip", warning = "Warning", important = "Important", caution = "Caution" },
}
local fills = { note = "#eaf1fb", tip = "#e9f5ec", warning = "#fdf3e1", important = "#fbe9e7",
                caution = "#fdf3e1" }
local strokes = { note = "#2f6fd0", tip = "#2e8b57", warning = "#d08a00", important = "#c0392b",
                  caution = "#d08a00" }
local lang = "en"

local function callout_kind(el)
  for _, cls in ipairs(el.classes) do
    local kind = cls:match("^callout%-(%a+)$")
    if kind and fills[kind] then return kind end
  end
  return nil
end

-- The title: a leading .callout-title div (from a "## Title" line), the title attribute, or the
-- default title of the kind (none for appearance="minimal").
local function take_title(el, kind)
  local first = el.content[1]
  if first and first.t == "Div" and first.classes:includes("callout-title") then
    el.content:remove(1)
    return pandoc.utils.blocks_to_inlines(first.content)
  end
  if el.attributes.title then
    return pandoc.utils.blocks_to_inlines(pandoc.read(el.attributes.title, "markdown").blocks)
  end
  if el.attributes.appearance ~= "minimal" then
    return { pandoc.Str((titles[lang] or titles.en)[kind]) }
  end
  return nil
end

local function callout(el)
  local kind = callout_kind(el)
  if not kind then return nil end
  local title = take_title(el, kind)
  if FORMAT == "typst" then
    -- A short callout moves whole to the next page rather than leave its title alone at the bottom.
    local breakable = #pandoc.utils.stringify(el.content) > 1200
    local blocks = { pandoc.RawBlock("typst", string.format(
      '#block(fill: rgb("%s"), stroke: (left: 3pt + rgb("%s")), inset: (x: 10pt, y: 8pt), radius: 3pt, '
        .. 'width: 100%%, breakable: %s)[', fills[kind], strokes[kind], tostring(breakable))) }
    if title then table.insert(blocks, pandoc.Para({ pandoc.Strong(title) })) end
    for _, b in ipairs(el.content) do table.insert(blocks, b) end
    table.insert(blocks, pandoc.RawBlock("typst", "]"))
    return blocks
  end
  local classes = { "callout", "callout-" .. kind, "callout-" .. (el.attributes.appearance or "default") }
  local content = {}
  if title then table.insert(content, pandoc.Div(pandoc.Plain(title), { class = "callout-title" })) end
  table.insert(content, pandoc.Div(el.content, { class = "callout-body" }))
  return pandoc.Div(content, pandoc.Attr(el.identifier, classes))
end

-- A captioned cell output (div.table-figure or div.figure holding a caption div): a single table
-- takes the caption and the identifier as its own (a <caption> in HTML, a figure caption in
-- Typst) and the div goes; otherwise the caption stays a paragraph, centred in Typst.
local function captioned(el)
  if not (el.classes:includes("table-figure") or el.classes:includes("figure")) then return nil end
  local cap, tables = nil, {}
  for i, b in ipairs(el.content) do
    if b.t == "Div" and (b.classes:includes("table-caption") or b.classes:includes("figure-caption")) then
      cap = i
    elseif b.t == "Table" then
      table.insert(tables, i)
    end
  end
  if not cap then return nil end
  local inlines = pandoc.utils.blocks_to_inlines(el.content[cap].content)
  if el.classes:includes("table-figure") and #tables == 1 then
    local tbl = el.content[tables[1]]
    tbl.caption = { long = { pandoc.Plain(inlines) } }
    tbl.identifier = el.identifier  -- the table itself is the link target; no wrapper block
    el.content:remove(cap)
    return el.content
  elseif FORMAT == "typst" then
    el.content[cap] = pandoc.Div({ pandoc.RawBlock("typst", "#align(center)[#text(size: 0.9em)["),
      pandoc.Plain(inlines), pandoc.RawBlock("typst", "]]") })
  end
  return el
end

local function other_div(el)
  if el.classes:includes("notes") and FORMAT ~= "revealjs" then return {} end
  return captioned(el)
end

return {
  { Meta = function(meta)
      if meta.lang then lang = pandoc.utils.stringify(meta.lang):sub(1, 2) end
    end },
  { Div = function(el) return callout(el) or other_div(el) end },
}
