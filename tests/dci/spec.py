"""The DCI standard's own OpenAPI schemas, to validate every DCI answer and callback against.

The YAML files are the standard's (`spdci/standards`, `release/yaml/`), never copied into this
repository: they are read from `TEPAT_DCI_SPEC_DIR` (default `~/.cache/tepat/dci-spec/`), else
downloaded from GitHub at the pinned commit below; either way their SHA-256 must match. Without
them (no copy, no network) the tests that need them are skipped, saying why.

The bodies are validated with `jsonschema` (Draft 4, the dialect OpenAPI 3.0 schemas are a
subset of) against the schemas the standard's own paths declare, `$ref`s resolved inside the
YAML. Where the standard's schemas cannot mean what they say, they are corrected here, each
correction named in `FIXES` and in docs/dci.md ("Where the standard errs").
"""

from __future__ import annotations

import copy
import hashlib
import os
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

COMMIT = "3410011a6e1997bc1bdd35551327a36ac0672cab"
SOCIAL = "social_api_v1.0.0.yaml"
CORE = "registry_core_api_v1.0.0.yaml"
SHA256 = {
    SOCIAL: "c9578aa6152b309a8f989ddd88ff1145485449592797ec07c8ffb3df438e2d5a",
    CORE: "5c062c94756c31ac6ec9669c99f93249562801a45c3c37f8d2838df8cccfb29d",
}
RAW = f"https://raw.githubusercontent.com/spdci/standards/{COMMIT}/release/yaml/"

# Corrections of the standard's schemas, as (file, JSON pointer, what it becomes, why).
FIXES: list[tuple[str, str, Any, str]] = [
    (
        CORE,
        "/components/schemas/SubscriptionInfo/required",
        ["code", "timestamp"],
        "requires `subscription_code` and `subscribe_criteria`, which it does not define: its "
        "code property is `code`",
    ),
    (
        CORE,
        "/components/schemas/NotifyEventRequest/properties/notify_event/items/properties/data/"
        "properties/response_entity/type",
        "string",
        "`type: enum` is no JSON Schema type; the member is one of its `enum` strings",
    ),
]


def _directory() -> Path:
    return Path(os.environ.get("TEPAT_DCI_SPEC_DIR", "~/.cache/tepat/dci-spec")).expanduser()


def _fetch(name: str) -> bytes | None:
    path = _directory() / name
    if path.is_file():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == SHA256[name]:
            return data
    try:
        with urllib.request.urlopen(RAW + name, timeout=20) as r:  # noqa: S310 (a fixed https URL)
            data = bytes(r.read())
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != SHA256[name]:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError:
        pass
    return data


def _set(document: dict[str, Any], pointer: str, value: Any) -> None:
    *parents, last = (p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:])
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    assert last in node, f"the standard no longer has {pointer}: review FIXES"
    node[last] = value


@cache
def documents() -> dict[str, dict[str, Any]] | None:
    """Both YAML documents, corrected (None: not available here)."""
    out = {}
    for name in (SOCIAL, CORE):
        data = _fetch(name)
        if data is None:
            return None
        loaded: dict[str, Any] = yaml.safe_load(data)
        out[name] = loaded
    for name, pointer, value, _why in FIXES:
        _set(out[name], pointer, value)
    return out


def require() -> dict[str, dict[str, Any]]:
    found = documents()
    if found is None:
        pytest.skip(
            f"the DCI standard's YAML ({SOCIAL}, {CORE} at spdci/standards {COMMIT[:12]}) is "
            f"neither in {_directory()} (TEPAT_DCI_SPEC_DIR) nor downloadable with that SHA-256"
        )
    return found


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _body(path: str, *, response: bool) -> tuple[str, str]:
    """(file, pointer) of the JSON schema the standard declares for `path`'s body: the request
    body of a callback Tepat sends, or the answer of an endpoint Tepat serves."""
    name = SOCIAL if path in _SOCIAL_PATHS else CORE
    if response:
        return name, _pointer(
            "paths", path, "post", "responses", "default", "content", "application/json", "schema"
        )
    return name, _pointer(
        "paths", path, "post", "requestBody", "content", "application/json", "schema"
    )


_SOCIAL_PATHS = frozenset(
    {
        "/registry/sync/search",
        "/registry/sync/txn/status",
        "/registry/on-search",
        "/registry/txn/on-status",
        "/registry/search",
        "/registry/txn/status",
    }
)
ACK = "#/components/responses/Response/content/application~1json/schema"


@cache
def _validator(name: str, pointer: str) -> Draft4Validator:
    root = copy.deepcopy(require()[name])
    root["$ref"] = pointer  # Draft 4: `$ref` stands for the whole object; pointers resolve in it
    return Draft4Validator(root)


def check(name: str, pointer: str, body: Any) -> None:
    errors = sorted(_validator(name, pointer).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        first: ValidationError = errors[0]
        where = "/".join(str(p) for p in first.absolute_path)
        raise AssertionError(
            f"not what {name} {pointer} allows, at /{where}: {first.message}"
            + "".join(f"\n  also: {e.message}" for e in errors[1:5])
        )


# The answers of Tepat's DCI endpoints (the path under /dci), by the standard's path.
ANSWERS = {
    "/registry/sync/search": _body("/registry/sync/search", response=True),
    "/registry/sync/txn/status": _body("/registry/sync/txn/status", response=True),
}
ACKNOWLEDGED = (
    "/registry/search",
    "/registry/txn/status",
    "/registry/subscribe",
    "/registry/unsubscribe",
)
# The callbacks Tepat sends, by the path suffix they are POSTed to.
CALLBACKS = {
    "/on-search": _body("/registry/on-search", response=False),
    "/txn/on-status": _body("/registry/txn/on-status", response=False),
    "/on-subscribe": _body("/registry/on-subscribe", response=False),
    "/on-unsubscribe": _body("/registry/on-unsubscribe", response=False),
    "/notify": _body("/registry/notify", response=False),
}


def check_answer(path: str, status: int, body: Any) -> None:
    """A DCI endpoint's answer (`path` under /dci): a refusal carries the acknowledgement with
    its error (the standard's `Response`); an async endpoint acknowledges; a sync one answers."""
    if status >= 400 or path in ACKNOWLEDGED:
        name = CORE if path in ("/registry/subscribe", "/registry/unsubscribe") else SOCIAL
        check(name, ACK, body)
        return
    if path in ANSWERS:
        check(*ANSWERS[path], body)
        return
    raise AssertionError(f"no schema of the standard for the answer of {path}")


def check_callback(path: str, body: Any) -> None:
    for suffix, (name, pointer) in CALLBACKS.items():
        if path.endswith(suffix):
            check(name, pointer, body)
            return
    raise AssertionError(f"a callback to {path}: not one the standard defines")
