"""Pydantic validation errors in our words, written in one place for every reader of them: the settings loader
(`load_service_config`), the query schema (`QueryError`), the HTTP API's 422 answers and the CLI.

A failed field reads as its dotted path and a short message: `windows.sample_fsp: unknown field`,
`text: required`, `threshold: must be in [0, 1.0]` (a validator's own message, without pydantic's
"Value error, " prefix)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping


def error_list(errors: Iterable[Mapping]) -> list[dict]:
    """Each error as `{"loc": [path...], "msg": our wording, "type": pydantic's error type}` (the 422 `detail` items).
    Takes `ValidationError.errors()` or errors built by hand (which may leave out `type`)."""
    out = []
    for e in errors:
        kind = e.get("type", "value_error")
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = "unknown field"
        elif kind == "missing":
            msg = "required"
        out.append({"loc": list(e.get("loc", ())), "msg": msg, "type": kind})
    return out


def error_lines(errors: Iterable[Mapping], whole: str = "value") -> list[str]:
    """Each error as one `loc.path: message` line; `whole` names what an error about the whole input is about."""
    return [f"{'.'.join(str(x) for x in e['loc']) or whole}: {e['msg']}" for e in error_list(errors)]
