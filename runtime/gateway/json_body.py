"""JSON request bodies, read as JSON is defined (RFC 8259), not as Python's ``json`` reads it.

Python's parser accepts more than JSON, and each extra is a value that fails later, deeper, and
in the wrong shape (a 500, or FastAPI's ``{"detail": ...}``):

=============================  ==================================  ===========================
what a body may hold           what Python makes of it             answered here
=============================  ==================================  ===========================
``NaN``, ``Infinity``          ``nan``, ``inf``                    400 ``non_finite_number``
``1E400`` (valid JSON)         ``inf``                             400 ``non_finite_number``
``{"a": 1, "a": 2}``           ``{"a": 2}`` (the last wins)        400 ``duplicate_key``
``"\\ud800"`` (a lone escape)  a str that cannot be UTF-8 encoded  400 ``invalid_string``
bytes that are not UTF-8       ``UnicodeDecodeError``              400 ``bad_json``
UTF-16/32 bytes                decoded (Python guesses)            400 ``bad_json``
an int of 5000 digits          ``ValueError``                      400 ``bad_json``
=============================  ==================================  ===========================

A non-finite number could reach ``json.dumps`` of the cache key or a response (both refuse
it), duplicate keys make the request mean what one parser or another picks, and a lone
surrogate fails wherever the string is encoded (msgpack, the tokenizer, the response). Each is
refused with OpenAI's 400 naming the field (``param``: ``temperature``, ``messages.0.content``).

The check costs the valid majority almost nothing: the parser's hooks only note that something
is wrong (a float hook, a constant hook, a per-object hook), and the tree is walked to find the
field only then; lone surrogates are looked for only in bodies that contain ``\\ud``.

:class:`StrictJsonRoute` puts this parser under every route of the app
(``app.router.route_class``), so FastAPI's own body handling, and every route's, gets it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from runtime.gateway.errors import ApiError

__all__ = ["StrictJsonRoute", "StrictRequest", "loads"]

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _Object(dict):
    """A JSON object that had a key more than once (``duplicate``: the first such key)."""

    duplicate = ""


class _Scan:
    """The parser's hooks: they build the values and note what JSON proper does not allow."""

    def __init__(self) -> None:
        self.non_finite = False
        self.duplicate = False

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        self.duplicate = True
        marked = _Object(obj)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                marked.duplicate = key
                break
            seen.add(key)
        return marked

    def number(self, text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            self.non_finite = True
        return value

    def constant(self, name: str) -> float:  # NaN, Infinity, -Infinity
        self.non_finite = True
        return float(name)


def loads(body: bytes) -> Any:
    """Parse a request body as strict JSON.

    Raises:
        ApiError: 400 -- not UTF-8, not JSON, or JSON that holds a non-finite number, a
            repeated key or a lone surrogate; ``param`` names the field where there is one.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            f"request body is not valid UTF-8: byte {exc.start} (0x{body[exc.start]:02x})",
            code="bad_json",
        ) from None
    scan = _Scan()
    try:
        value = json.loads(
            text,
            object_pairs_hook=scan.object,
            parse_float=scan.number,
            parse_constant=scan.constant,
        )
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"request body is not valid JSON: {exc.msg} at character {exc.pos}",
            code="bad_json",
        ) from None
    except (ValueError, RecursionError) as exc:  # an int too long to convert; nesting too deep
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="bad_json") from None
    if scan.non_finite:
        found = _find(value, lambda v: isinstance(v, float) and not math.isfinite(v))
        raise _refused(
            found[0] if found else "",
            "numbers must be finite (NaN, Infinity and numbers beyond the range of a double "
            "are not JSON numbers this server takes)",
            "non_finite_number",
        )
    if scan.duplicate:
        found = _find(value, lambda v: isinstance(v, _Object))
        path, obj = found if found else ("", _Object())
        where = f"{path}.{obj.duplicate}" if path else obj.duplicate
        raise _refused(where, "key given more than once", "duplicate_key")
    if _SURROGATE_ESCAPE.search(body):
        found = _find(value, _unencodable)
        if found is not None:
            raise _refused(
                found[0],
                "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its "
                "pair), which is not text",
                "invalid_string",
            )
    return value


def _refused(path: str, why: str, code: str) -> ApiError:
    path = path.encode("utf-8", "backslashreplace").decode("utf-8")  # a key may be the fault
    return ApiError(400, f"{path or 'body'}: {why}", param=path or None, code=code)


def _unencodable(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find(value: Any, match: Callable[[Any], bool]) -> tuple[str, Any] | None:
    """The dotted path (``messages.0.content``; ``""``: the body itself) and the value of the
    first value, or object key, that ``match``es, depth first in document order. Iterative: a
    body nested as deep as the parser allows must not exhaust the stack here."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if match(v):
            return path, v
        if isinstance(v, dict):
            items = [(f"{path}.{k}" if path else str(k), k, x) for k, x in v.items()]
            for sub, k, _ in items:
                if match(k):
                    return sub, k
            stack.extend((sub, x) for sub, _, x in reversed(items))
        elif isinstance(v, list):
            stack.extend((f"{path}.{i}" if path else str(i), v[i]) for i in reversed(range(len(v))))
    return None


class StrictRequest(Request):
    """A request whose :meth:`json` is :func:`loads` (FastAPI reads JSON bodies through it)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route that reads its JSON body strictly (``app.router.route_class = StrictJsonRoute``,
    before the routes are added; FastAPI's documented way to customise the request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictRequest(request.scope, request.receive))

        return strict
