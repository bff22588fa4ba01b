"""Parsing request bodies and query strings with pydantic models, failing with a 400 whose
message says exactly which field is wrong and what is allowed.

A body is refused (400 `invalid_json`) before any model sees it when it nests arrays and
objects deeper than `MAX_BODY_DEPTH` levels, or when a string (or key) holds a lone UTF-16
surrogate (`"\\ud800"`): valid JSON, but not text that can be stored, logged or sent on. One
holding `NaN`, `Infinity` or `-Infinity` (not JSON, though Python's decoder takes them) or a
number past a double's range (`1e400`, which would decode to infinity) is a 400
`validation_error` naming where, as a number out of a field's range is.
Bodies larger than `INLINE_PARSE_BYTES` are parsed in a worker thread, off the event loop.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from typing import Any, TypeVar

import anyio
from aiohttp import web
from pydantic import BaseModel, ValidationError

from runtime.api.errors import ApiError, bad_request

M = TypeVar("M", bound=BaseModel)

MAX_BODY_DEPTH = 64
"""Arrays and objects in a request body nest at most this deep (documented in the README)."""
INLINE_PARSE_BYTES = 64 * 1024
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BodyProblem(ValueError):
    """A body that is JSON but not one the daemon accepts (too deep, not valid Unicode)."""


class NotFiniteNumber(BodyProblem):
    """A body holding NaN, Infinity or -Infinity (Python's decoder takes them, JSON has no
    such values) or a number past a double's range (1e400, which decodes to infinity).
    `location` is where, as pydantic's `loc`: it is refused as a field's value would be."""

    def __init__(self, problem: str, location: tuple[int | str, ...]) -> None:
        self.problem = problem
        self.location = location
        where = ".".join(str(part) for part in location)
        super().__init__(f"{where!r}: {problem}" if where else problem)


async def read_json(request: web.Request, *, allow_empty: bool = False) -> Any:
    """The body as JSON. An empty body is `{}` when `allow_empty`, else a 400."""
    try:
        raw = await request.read()  # aiohttp raises 413 past client_max_size
    except web.RequestPayloadError as exc:  # a Content-Encoding that does not decode, say
        raise bad_request(
            f"the request body could not be read: {str(exc).strip()}", code="invalid_json"
        ) from None
    if not raw.strip():
        if allow_empty:
            return {}
        raise bad_request(
            "the request body is empty; send a JSON object (Content-Type: application/json)",
            code="invalid_json",
        )
    try:
        if len(raw) > INLINE_PARSE_BYTES:
            return await anyio.to_thread.run_sync(decode_body, raw)
        return decode_body(raw)
    except UnicodeDecodeError as exc:
        raise bad_request(f"the request body is not UTF-8: {exc}", code="invalid_json") from exc
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}",
            code="invalid_json",
        ) from exc
    except NotFiniteNumber as exc:
        # a 400 naming the field, as for a number out of a field's range (README)
        field = ".".join(str(part) for part in exc.location)
        details = [{"field": field or None, "type": "finite_number", "message": exc.problem}]
        message = f"invalid request body: {exc}"
        raise ApiError(400, "validation_error", message, details=details) from exc
    except BodyProblem as exc:
        raise bad_request(f"the request body {exc}", code="invalid_json") from exc
    except ValueError as exc:  # an integer of more digits than Python converts, say
        message = f"the request body is not valid JSON: {exc}"
        raise bad_request(message, code="invalid_json") from exc


def decode_body(raw: bytes) -> Any:
    """Parse a JSON body and check its depth, strings and numbers; raises UnicodeDecodeError,
    json.JSONDecodeError or BodyProblem (NotFiniteNumber for NaN, Infinity or 1e400)."""
    too_deep = BodyProblem(f"nests arrays and objects deeper than {MAX_BODY_DEPTH} levels")
    not_finite: list[_NotFinite] = []

    def constant(name: str) -> _NotFinite:
        # Left as markers, not refused here, so the refusal can say where they are. (Kept,
        # they would be stored as null: an inputSchema's bound, say, making the tool unusable.)
        not_finite.append(_NotFinite(f"{name} is not JSON: numbers must be finite"))
        return not_finite[-1]

    def number(text: str) -> float | _NotFinite:
        value = float(text)
        if math.isinf(value):
            problem = f"{text[:40]} is past a double's range: numbers must be finite"
            not_finite.append(_NotFinite(problem))
            return not_finite[-1]
        return value

    try:
        # a UTF-8 byte order mark is allowed and dropped (without the utf-8-sig codec, which a
        # daemon's first request would otherwise import on the event loop)
        value = json.loads(
            raw.removeprefix(codecs.BOM_UTF8).decode(), parse_constant=constant, parse_float=number
        )
    except RecursionError:  # far deeper than the limit: the decoder itself gave up
        raise too_deep from None
    # Only bracket counts above the limit can nest that deep, and lone surrogates can only
    # come from \uD8xx-\uDFxx escapes (UTF-8 has none): most bodies need no walk at all.
    deep = raw.count(b"[") + raw.count(b"{") > MAX_BODY_DEPTH
    if deep or _SURROGATE_ESCAPE.search(raw):
        _check_value(value, too_deep)
    if not_finite:
        raise NotFiniteNumber(not_finite[0].problem, _location_of(value, not_finite[0]))
    return value


class _NotFinite:
    """What the decoder gives for a number JSON cannot carry, until the body is refused."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _location_of(value: Any, marker: _NotFinite) -> tuple[int | str, ...]:
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(value, ())]
    while stack:
        item, location = stack.pop()
        if item is marker:
            return location
        if isinstance(item, dict):
            stack.extend((child, (*location, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, (*location, index)) for index, child in enumerate(item))
    return ()


def _check_value(value: Any, too_deep: BodyProblem) -> None:
    stack: list[tuple[Any, int, str]] = [(value, 0, "body")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, dict | list):
            if depth >= MAX_BODY_DEPTH:
                raise too_deep
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key, f"{where} (a key)")
                    stack.append((child, depth + 1, f"{where}.{key}"))
            else:
                stack.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(item))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        raise BodyProblem(
            f"has a lone UTF-16 surrogate ({char!a}) in {where[:120]}: JSON strings must "
            "be valid Unicode (escape a character outside the BMP as a surrogate pair)"
        ) from None


async def read_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object (anything else is a 400)."""
    data = await read_json(request, allow_empty=allow_empty)
    if not isinstance(data, dict):
        raise bad_request(
            f"the request body must be a JSON object, got {_json_kind(data)}",
            code="invalid_json",
        )
    return data


async def parse_body(
    request: web.Request,
    model: type[M],
    *,
    allow_empty: bool = False,
    context: dict[str, Any] | None = None,
) -> M:
    return validate(model, await read_object(request, allow_empty=allow_empty), context=context)


def parse_query(request: web.Request, model: type[M]) -> M:
    repeated = sorted({key for key in request.query if len(request.query.getall(key)) > 1})
    if repeated:
        raise bad_request(
            f"invalid query parameters: {', '.join(repeated)} given more than once",
            code="validation_error",
        )
    return validate(model, {key: request.query[key] for key in request.query}, where="query")


def refuse_query(request: web.Request) -> None:
    """A route that takes no query parameters refuses any (a typo is not silently ignored)."""
    if request.query:
        names = ", ".join(sorted(set(request.query)))
        raise bad_request(
            f"unknown query parameter(s): {names}; {request.method} {request.path} takes none",
            code="validation_error",
        )


def validate(
    model: type[M],
    data: dict[str, Any],
    *,
    where: str = "body",
    context: dict[str, Any] | None = None,
) -> M:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise validation_error(exc, model, where=where) from exc


def validation_error(exc: ValidationError, model: type[BaseModel], *, where: str) -> ApiError:
    problems: list[str] = []
    details: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        message = str(err["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            what = "query parameter" if where == "query" else "field"
            text = f"unknown {what} {loc!r}"
            if len(err["loc"]) == 1:
                text += f" (allowed: {', '.join(_field_names(model))})"
        elif kind == "missing":
            text = f"missing required field {loc!r}"
        elif not loc:
            text = message
        elif _may_hold_secrets(err["loc"], err.get("input")):
            text = f"{loc!r}: {message}"  # the value given is not repeated
        else:
            text = f"{loc!r}: {message} (got {_short(err.get('input'))})"
        problems.append(text)
        details.append({"field": loc or None, "type": kind, "message": message})
    prefix = "invalid query parameters: " if where == "query" else "invalid request body: "
    return ApiError(400, "validation_error", prefix + "; ".join(problems), details=details)


# Fields whose values may be credentials (an agent's environment, a custom model's key, the
# API token): an error about them names the field but does not quote the value, which would
# reach logs and terminals. Names are compared without case, `_` or `-` (`apiKey`, `api_key`).
_SECRET_FIELDS = frozenset(
    {"env", "apikey", "secret", "secrets", "token", "accesstoken", "password", "authorization"}
)


def _is_secret_field(name: int | str) -> bool:
    if not isinstance(name, str):
        return False
    return name.lower().replace("_", "").replace("-", "") in _SECRET_FIELDS


def _may_hold_secrets(location: tuple[int | str, ...], value: Any) -> bool:
    """Whether an error's input must not be quoted: its location names a secret field, or the
    input holds one at any depth (a union branch such as `model.str` gets the whole custom
    model object, apiKey included, as its input)."""
    if any(_is_secret_field(part) for part in location):
        return True
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(_is_secret_field(key) for key in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _short(value: Any) -> str:
    text = json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
