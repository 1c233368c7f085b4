"""A small checker of JSON bodies against ElevenLabs' OpenAPI spec (no extra dependency).

It resolves ``$ref``s and checks, recursively, that every field a schema marks ``required``
is present and that values have the schema's JSON type (objects, arrays, strings, numbers,
integers, booleans, null through ``nullable``/``anyOf``/``oneOf``/type lists) and, where the
schema lists them, one of its ``enum``/``const`` values. Formats, lengths and ranges are not
checked: the point is that a client generated from the spec can read what Chorus sends.
"""

import functools
import json
from pathlib import Path

SPEC_PATH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "elevenlabs-openapi.json"
)

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


@functools.cache
def spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


def resolve(schema: dict) -> dict:
    """Follow ``$ref`` (``#/components/schemas/Name``) until a schema without one."""
    seen = 0
    while "$ref" in schema:
        node = spec()
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
        seen += 1
        if seen > 50:
            raise ValueError(f"$ref cycle at {schema}")
    return schema


def response_schema(path: str, method: str = "get", status: str = "200") -> dict:
    """The JSON schema of an operation's response, e.g. ``("/v1/models", "get")``."""
    operation = spec()["paths"][path][method.lower()]
    content = operation["responses"][status]["content"]
    return content["application/json"]["schema"]


def problems(value, schema: dict, where: str = "$") -> list[str]:
    """What is wrong with ``value`` for ``schema`` (an empty list when nothing is)."""
    schema = resolve(schema)
    if value is None and schema.get("nullable"):
        return []
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [problems(value, option, where) for option in schema[key]]
            if any(not found for found in options):
                return []
            return [f"{where}: matches none of {key}: {'; '.join(o[0] for o in options)}"]
    found = []
    for part in schema.get("allOf", []):
        found += problems(value, part, where)
    if "const" in schema and value != schema["const"]:
        return [f"{where}: {value!r} is not {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_TYPES[kind](value) for kind in kinds):
            return [f"{where}: {type(value).__name__} {value!r:.60} is not {'/'.join(kinds)}"]
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{where}: the required field {name!r} is missing")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                found += problems(item, properties[name], f"{where}.{name}")
            elif isinstance(extra, dict):
                found += problems(item, extra, f"{where}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{i}]")
    return found


def assert_matches(body, path: str, method: str = "get", status: str = "200") -> None:
    """Fail with every problem when ``body`` does not fit the operation's response schema."""
    found = problems(body, response_schema(path, method, status))
    assert not found, f"{method.upper()} {path} → {status}:\n" + "\n".join(found)
