"""Chart specs cached by the content of what they are built from.

Building an Altair chart and turning it into a Vega-Lite spec costs 0.05-0.4 s a chart (Altair deep-copies
and sanitises its data), most of a document's execution once the study is cached. `cached_chart` keys a
chart builder's result on its arguments' content (a study by its `key`, frames and arrays by joblib's
hash, plain values by their repr), the whole pipeline's source and Altair's version, and keeps the
validated spec on disk: executing a document again builds no chart that has not changed. Written here
because joblib's `Memory` would hash the whole study on every call.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from pipeline.cache import atomic_write_text, cache_dir, combined_digest, pipeline_source
from pipeline.study import StudyContext

_PLAIN = (str, int, float, bool, type(None))


class ChartSpec(dict):
    """A chart's Vega-Lite spec (a dict, as `Chart.to_dict()` gives it), from `cached_chart`.

    `chart()` rebuilds the Altair chart, for code that composes charts further (`slides.sized`)."""

    def __init__(self, spec: dict, key: str, build: Callable[[], Any]):
        super().__init__(spec)
        self.key = key
        self._build = build

    def to_dict(self, validate: bool = True) -> dict:
        return dict(self)

    def chart(self) -> Any:
        return self._build()


_pipeline_source = functools.cache(pipeline_source)  # read once per kernel: a change to any chart's code is a new key


@functools.cache
def _altair_version() -> str:
    """Altair writes the spec (its schema URL, defaults): an upgrade is a new key."""
    from importlib.metadata import version

    return version("altair")


def _token(value: Any) -> str | None:
    """What identifies an argument's content; None when nothing cheap does (the chart is then built)."""
    if isinstance(value, ChartSpec):
        return value.key
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, tuple | list):
        parts = [_token(v) for v in value]
        return None if None in parts else repr(parts)
    if isinstance(value, StudyContext):  # keyed by `study.run`; a stand-in without a key is not cached
        return f"study:{value.key}" if value.key else None
    try:
        import joblib

        return joblib.hash(value)
    except Exception:  # an argument joblib cannot pickle: no cache for this call
        return None


def cached_chart(build: Callable[..., Any]) -> Callable[..., ChartSpec | Any]:
    """Decorate a chart builder: its spec is built once per content of its arguments (see the module)."""
    name = f"{build.__module__}.{build.__qualname__}"

    @functools.wraps(build)
    def cached(*args: Any, **kwargs: Any) -> ChartSpec | Any:
        tokens = [_token(a) for a in args] + [_token(v) for _, v in sorted(kwargs.items())]
        if None in tokens:
            return build(*args, **kwargs)
        key = combined_digest([name, _pipeline_source(), _altair_version(), *sorted(kwargs), *tokens])
        path = cache_dir() / "charts" / f"spec-{key}.json"
        rebuild = functools.partial(build, *args, **kwargs)
        if path.is_file():
            try:
                return ChartSpec(json.loads(path.read_text(encoding="utf-8")), key, rebuild)
            except (OSError, ValueError):  # a damaged cache file: build again
                pass
        spec = rebuild().to_dict()  # validated against the schema, once per content
        atomic_write_text(path, json.dumps(spec))
        return ChartSpec(spec, key, rebuild)

    return cached
