"""The client: one httpx.Client with the key and the purpose, typed methods per endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tepat_client import receipts

USER_AGENT = "tepat-client/0.1"


class TepatError(Exception):
    """An error answer (4xx, 5xx): the problem document's `code`, `detail` and the status."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        self.code: str = str(problem.get("code") or problem.get("title") or "error")
        self.detail: str = str(problem.get("detail") or problem.get("title") or "")
        self.request_id: str | None = problem.get("request_id")
        super().__init__(f"{status} {self.code}: {self.detail}")


class StreamError(TepatError):
    """A streamed answer (NDJSON) that ended with an error line instead of its summary: what
    came before it is valid but incomplete."""


@dataclass(frozen=True)
class Answer:
    """A lookup's answer: the parsed JSON, the exact bytes received and their receipt."""

    data: dict[str, Any]
    body: bytes = field(repr=False)
    receipt: str | None

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.data["meta"]
        return meta

    @property
    def results(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.data["results"]
        return results


def raise_for_problem(response: httpx.Response) -> None:
    """TepatError for an error status, with the server's problem document when it sent one."""
    if not response.is_error:
        return
    if not response.is_closed:
        response.read()
    try:
        problem = response.json()
    except ValueError:
        problem = {"code": "http_error", "detail": response.text[:500]}
    if not isinstance(problem, dict):
        problem = {"code": "http_error", "detail": str(problem)[:500]}
    raise TepatError(response.status_code, problem)


def ndjson(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The lines of a streamed NDJSON answer, the summary last; StreamError if the stream ends
    with an error line (the server's sign of an incomplete answer)."""
    last: dict[str, Any] | None = None
    for raw in response.iter_lines():
        if not raw:
            continue
        item = json.loads(raw)
        if isinstance(item, dict) and set(item) == {"error"}:
            raise StreamError(response.status_code, item["error"])
        last = item
        yield item
    if last is None or "summary" not in last:
        raise StreamError(response.status_code, {"code": "truncated", "detail": "no summary line"})


class Tepat:
    """A Tepat API client for one key and one purpose.

    >>> with Tepat("https://tepat.example.go.id", api_key=KEY, purpose="pbi-verification") as t:
    ...     answer = t.people(["3201011201990001"])
    ...     claims = t.verify(answer)   # the receipt, checked against the service's JWKS
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        purpose: str,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {api_key}",
                "X-Purpose": purpose,
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )
        self._jwks: dict[str, Any] | None = None
        from tepat_client.jobs import Jobs

        self.jobs = Jobs(self.http)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Tepat:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- lookups ---------------------------------------------------------------------------

    def _lookup(self, path: str, body: dict[str, Any]) -> Answer:
        if body.get("programs"):
            body["programs"] = list(body["programs"])
        r = self.http.post(path, json={k: v for k, v in body.items() if v})
        raise_for_problem(r)
        return Answer(r.json(), r.content, r.headers.get("Tepat-Receipt"))

    def people(
        self,
        niks: Sequence[str],
        *,
        explain: bool = False,
        programs: Sequence[str] | None = None,
        snapshot: str | None = None,
        rule_set: str | None = None,
    ) -> Answer:
        """`POST /v1/people/lookup`: 1 to 1,000 NIKs, answered in order."""
        pins = {
            "explain": explain,
            "programs": programs,
            "snapshot": snapshot,
            "rule_set": rule_set,
        }
        return self._lookup("/v1/people/lookup", {"niks": list(niks), **pins})

    def families(
        self,
        no_kks: Sequence[str],
        *,
        explain: bool = False,
        programs: Sequence[str] | None = None,
        snapshot: str | None = None,
        rule_set: str | None = None,
    ) -> Answer:
        """`POST /v1/families/lookup`: 1 to 1,000 No. KKs, answered in order."""
        pins = {
            "explain": explain,
            "programs": programs,
            "snapshot": snapshot,
            "rule_set": rule_set,
        }
        return self._lookup("/v1/families/lookup", {"no_kks": list(no_kks), **pins})

    # --- metadata ---------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        r = self.http.get(path)
        raise_for_problem(r)
        return r.json()

    def snapshots(self) -> list[dict[str, Any]]:
        """The published snapshots (DTSEN releases), newest first, with their checksums."""
        found: list[dict[str, Any]] = self._get("/v1/snapshots")
        return found

    def rule_sets(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._get("/v1/rule-sets")
        return found

    def programs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._get("/v1/programs")
        return found

    # --- receipts ---------------------------------------------------------------------------

    def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        """The service's public keys (fetched once; `refresh` after a key rotation)."""
        if self._jwks is None or refresh:
            self._jwks = self._get("/.well-known/jwks.json")
        assert self._jwks is not None
        return self._jwks

    def verify(self, answer: Answer) -> dict[str, Any]:
        """The answer's receipt checked against the service's keys: its claims (audit id, seq,
        snapshot, rule set), or receipts.ReceiptInvalid. The JWKS is fetched again once if the
        receipt names a key not in the cached one (a rotation since)."""
        if answer.receipt is None:
            raise receipts.ReceiptInvalid("the answer carries no Tepat-Receipt header")
        try:
            return receipts.verify_receipt(answer.receipt, answer.body, self.jwks())
        except receipts.ReceiptInvalid:
            return receipts.verify_receipt(answer.receipt, answer.body, self.jwks(refresh=True))

    # --- change lists -----------------------------------------------------------------------

    def changes(
        self,
        from_snapshot: str,
        to_snapshot: str,
        *,
        rule_set: str | None = None,
        programs: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        kode_wilayah: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """`POST /v1/changes`: who gained and lost eligibility between two releases, one dict
        per person, then `{"summary": ...}`; streamed (flat memory whatever the list's size)."""
        body: dict[str, Any] = {"from": from_snapshot, "to": to_snapshot}
        optional = {
            "rule_set": rule_set,
            "programs": list(programs) if programs else None,
            "kinds": list(kinds) if kinds else None,
            "kode_wilayah": kode_wilayah,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        with self.http.stream("POST", "/v1/changes", json=body, timeout=None) as r:
            raise_for_problem(r)
            yield from ndjson(r)
