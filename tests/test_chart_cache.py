"""Chart specs are cached by the content of what they are built from (`pipeline.report.memo`)."""

from __future__ import annotations

import dataclasses

import altair as alt
import pandas as pd

from pipeline.report import memo, slides
from pipeline.study import StudyContext

BUILT: list[str] = []


@memo.cached_chart
def bars(frame: pd.DataFrame, title: str = "") -> alt.Chart:
    BUILT.append(title)
    return alt.Chart(frame, title=title).mark_bar().encode(x="group:N", y="rate:Q")


def _frame(rate: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame({"group": ["F", "M"], "rate": [rate, 0.3]})


def test_a_chart_is_built_once_per_content_of_its_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path))
    direct = bars.__wrapped__(_frame(), title="a").to_dict()
    BUILT.clear()
    first = bars(_frame(), title="a")
    again = bars(_frame(), title="a")  # an equal frame, another object: read from the cache
    assert BUILT == ["a"]
    assert again == first == direct
    bars(_frame(0.6), title="a")  # one value changed in the data
    bars(_frame(), title="b")  # another argument
    assert BUILT == ["a", "a", "b"]
    assert len(list((tmp_path / "charts").glob("spec-*.json"))) == 3


def test_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path))
    BUILT.clear()
    spec = bars(_frame(), title="a")
    (path,) = (tmp_path / "charts").glob("spec-*.json")
    path.write_text("{trunc", encoding="utf-8")
    assert bars(_frame(), title="a") == spec
    assert BUILT == ["a", "a"]


def test_a_study_is_keyed_by_its_study_key_and_not_cached_without_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path))
    fields = {f.name: None for f in dataclasses.fields(StudyContext) if f.default is dataclasses.MISSING
              and f.default_factory is dataclasses.MISSING}
    ctx = StudyContext(**fields)
    assert memo._token(ctx) is None  # a context not loaded by `study.context`: built every time
    ctx.key = "abc"
    assert memo._token(ctx) == "study:abc"


def test_resizing_a_cached_chart_for_a_slide_gives_the_resized_chart(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path))
    cached = bars(_frame(), title="a")
    direct = slides.sized.__wrapped__(bars.__wrapped__(_frame(), title="a"), width=500, height=200).to_dict()
    assert slides.sized(cached, width=500, height=200) == direct
    assert slides.sized(bars(_frame(), title="a"), width=500, height=200) == direct  # from the cache now
    assert direct["width"] == 500
