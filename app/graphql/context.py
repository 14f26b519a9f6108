"""Per-request GraphQL state: the caller, the pinned snapshot, one read connection, the audit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from app.eligibility import FamilyEvaluation, Program, RuleSet
from app.errors import ValidationFailed
from app.http import limits
from app.http.caller import authenticate, charge
from app.http.request_ids import request_id_of
from app.http.state import AppState
from app.identifiers import as_str, echo
from app.repositories import registry
from app.repositories.registry import FamilyRow, PersonRow
from app.schemas.lookup import FamiliesLookup, PeopleLookup
from app.schemas.snapshots import Snapshot
from app.services import eligibility, lookup, rule_sets, snapshots
from app.services.audit import new_audit_id, nik_subject, no_kk_subject
from app.services.catalog import Reads
from app.services.disclosure import shape_decisions
from app.services.lookup import Caller
from app.services.pinning import Pinned

Entry = tuple[FamilyRow, list[PersonRow]]
OPERATION = "graphql"
RECORDED = "graphql_recorded"  # scope state: the audit record this response's receipt names
M = TypeVar("M", bound=BaseModel)


class ReadSession:
    """One read-only connection per request, opened on first use and used by one task at a time.

    Loader batches and pinning run as concurrent tasks; the lock makes their statements
    sequential on the one connection (asyncpg cannot interleave two queries on it).
    """

    def __init__(self, reads: Reads) -> None:
        self._reads = reads
        self._lock = asyncio.Lock()
        self._stack: AsyncExitStack | None = None
        self._conn: AsyncConnection | None = None

    @asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection]:
        async with self._lock:
            if self._conn is None:
                self._stack = AsyncExitStack()
                self._conn = await self._stack.enter_async_context(self._reads.read_connection())
            yield self._conn

    async def close(self) -> None:
        """Give the connection back before the audit wait (it must not hold a pool slot)."""
        async with self._lock:
            stack, self._stack, self._conn = self._stack, None, None
            if stack is not None:
                await stack.aclose()


def _validated(model: type[M], data: dict[str, Any], argument: str, *, single: bool = False) -> M:
    """The REST request DTO validates GraphQL arguments too; errors name the GraphQL argument
    (`single`: one identifier, given as a one-item list) and never echo an identifier."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = [str(p) for p in first["loc"]]
        if loc[0] in ("niks", "no_kks"):
            field = argument if single else argument + "".join(f"[{p}]" for p in loc[1:])
        else:
            field = ".".join(loc)
        ctx = first.get("ctx") or {}
        message = first["msg"]
        extra: dict[str, Any] = {"field": field}
        if "rule" in ctx:
            extra["rule"] = ctx["rule"]
        value = first.get("input")
        if isinstance(value, str) and loc[0] in ("niks", "no_kks"):
            extra["value"] = echo(value, identifier=True)
        raise ValidationFailed(f"{field}: {message}", **extra) from None


class GraphContext(BaseContext):
    """Everything one GraphQL request shares. Resolvers only call these methods."""

    def __init__(self, state: AppState, request: Request) -> None:
        super().__init__()
        self.state = state
        self.http = request
        self.request_id = request_id_of(request.scope)
        self.caller: Caller | None = None
        self.session = ReadSession(state.reads)
        self._pinned: Pinned | None = None
        self._snapshot_ids: dict[str | None, str] = {}
        self._rule_sets: dict[str | None, RuleSet] = {}
        self._rule_set_fixed = False
        self._rule_set_lock = asyncio.Lock()
        self._pin_lock = asyncio.Lock()
        self._plain: eligibility.View | None = None
        self._people: DataLoader[int, Entry | None] | None = None
        self._families: DataLoader[int, Entry | None] | None = None
        self._evaluations: dict[tuple[int, tuple[Program, ...]], FamilyEvaluation] = {}
        self._stored: dict[eligibility.View, DataLoader[str, list[dict[str, Any]]]] = {}
        # What the audit record names (UU 27/2022 art. 31): subjects asked, NIKs disclosed.
        self.asked: list[str] = []
        self.asked_niks: set[str] = set()
        self.disclosed: set[str] = set()
        self.found = 0
        self.meta: dict[str, Any] = {"request_id": self.request_id}

    # --- authorisation (called once, before execution, by the Access extension) --------------

    async def authorize(self, groups: dict[str, str]) -> None:
        """Authenticate, check the purpose and every field group the document selects."""
        headers = self.http.headers
        self.caller = await authenticate(
            self.http.scope, headers.get("authorization"), headers.get("x-purpose"), groups
        )

    def _caller(self) -> Caller:
        if self.caller is None:  # the Access extension authorises every personal field first
            raise RuntimeError("personal data resolved without authorisation")
        return self.caller

    # --- pinning -----------------------------------------------------------------------------

    async def _pin(self, snapshot_id: str | None) -> Pinned:
        """One snapshot per request (STYLE: resolved once, echoed in meta)."""
        # Through the catalog cache, like REST: no statement while the cache is live.
        async with self._pin_lock:
            if self._pinned is None:
                self._pinned = await self.state.reads.pin(snapshot_id, None)
                self._snapshot_ids[snapshot_id] = self._pinned.snapshot.id
                self._rule_sets[None] = self._pinned.rule_set  # the default, in force
            elif snapshot_id not in self._snapshot_ids:
                other = await self.state.reads.pin(snapshot_id, None)
                self._snapshot_ids[snapshot_id] = other.snapshot.id
            if self._snapshot_ids[snapshot_id] != self._pinned.snapshot.id:
                raise ValidationFailed(
                    "a request reads one snapshot: every field must name the same one",
                    field="snapshot",
                )
            return self._pinned

    async def _rule_set(self, rule_set_id: str | None) -> RuleSet:
        """One rule set per request: the first `eligibility` fixes it, the others must agree."""
        async with self._rule_set_lock:
            pinned = self._pinned
            assert pinned is not None
            chosen = self._rule_sets.get(rule_set_id)
            if chosen is None:
                async with self.session.use() as conn:
                    chosen = await rule_sets.resolve(conn, pinned.snapshot, rule_set_id)
                self._rule_sets[rule_set_id] = chosen
            if not self._rule_set_fixed:
                self._pinned = pinned = Pinned(pinned.snapshot, chosen)
                self._rule_set_fixed = True
            elif chosen.id != pinned.rule_set.id:
                raise ValidationFailed(
                    "a request uses one rule set: every eligibility must name the same one",
                    field="ruleSet",
                )
            return chosen

    # --- loading -----------------------------------------------------------------------------

    async def _ask(self, subjects: list[str], niks: Sequence[str] = ()) -> None:
        if len(self.asked) + len(subjects) > self.state.settings.max_batch:
            raise ValidationFailed(
                f"at most {self.state.settings.max_batch} NIKs and No. KKs per request",
                field="niks",
            )
        # The same NIK rate limit as REST, charged before the lookup (429 when over).
        await charge(self.http.scope, self._caller().principal, len(subjects))
        self.asked.extend(subjects)
        self.asked_niks.update(niks)

    def _loaders(self, snapshot: Snapshot) -> tuple[DataLoader[int, Entry | None], ...]:
        if self._people is None or self._families is None:
            session = self.session

            async def by_no_kk(keys: list[int]) -> list[Entry | None]:
                async with session.use() as conn:
                    found = await registry.families_by_no_kk(conn, snapshot.key, keys)
                return [found.get(k) for k in keys]

            families: DataLoader[int, Entry | None] = DataLoader(by_no_kk)

            async def by_nik(keys: list[int]) -> list[Entry | None]:
                async with session.use() as conn:
                    found = await registry.families_of_people(conn, snapshot.key, keys)
                families.prime_many(dict(found.items()))
                index = {m.nik: entry for entry in found.values() for m in entry[1]}
                return [index.get(k) for k in keys]

            self._people, self._families = DataLoader(by_nik), families
        return self._people, self._families

    async def people(self, niks: list[str], snapshot_id: str | None) -> list[Entry | None]:
        request = _validated(PeopleLookup, {"niks": niks, "snapshot": snapshot_id}, "niks")
        await self._ask([nik_subject(n) for n in request.niks], request.niks)
        pinned = await self._pin(request.snapshot)
        people, _ = self._loaders(pinned.snapshot)
        entries = await people.load_many([int(n) for n in request.niks])
        self.found += sum(1 for e in entries if e is not None)
        return entries

    async def person(self, nik: str, snapshot_id: str | None) -> Entry | None:
        _validated(PeopleLookup, {"niks": [nik], "snapshot": snapshot_id}, "nik", single=True)
        return (await self.people([nik], snapshot_id))[0]

    async def family(self, no_kk: str, snapshot_id: str | None) -> Entry | None:
        _validated(
            FamiliesLookup, {"no_kks": [no_kk], "snapshot": snapshot_id}, "noKk", single=True
        )
        return (await self.families([no_kk], snapshot_id))[0]

    async def families(self, no_kks: list[str], snapshot_id: str | None) -> list[Entry | None]:
        request = _validated(FamiliesLookup, {"no_kks": no_kks, "snapshot": snapshot_id}, "noKks")
        await self._ask([no_kk_subject(n) for n in request.no_kks])
        pinned = await self._pin(request.snapshot)
        _, families = self._loaders(pinned.snapshot)
        entries = await families.load_many([int(n) for n in request.no_kks])
        self.found += sum(1 for e in entries if e is not None)
        principal = self._caller().principal
        if principal.can_see("membership"):
            # As REST: a family costs the members it can disclose (one was charged already).
            extra = sum(len(e[1]) - 1 for e in entries if e is not None)
            if extra:
                limits.debit(self.http.scope, principal, extra)
        return entries

    # --- shaping: the service's own result dicts, so both faces show the same thing -----------

    def _plain_view(self) -> eligibility.View:
        """Everything but decisions, for the fields of a person or family."""
        if self._plain is None:
            groups = frozenset(self._caller().principal.field_groups) - {"decision"}
            self._plain = eligibility.View(programs=(), groups=groups)
        return self._plain

    def person_fields(self, nik: str, entry: Entry | None) -> dict[str, Any]:
        found = {} if entry is None else {entry[0].no_kk: entry}
        return eligibility.person_results([nik], found, {}, self._plain_view())[0]

    def family_fields(self, entry: Entry) -> dict[str, Any]:
        no_kk = as_str(entry[0].no_kk)
        view = self._plain_view()
        view = eligibility.View(programs=(), groups=view.groups - {"membership"})
        assert self._pinned is not None
        # family_results reads an evaluation even without decisions: an empty one is free.
        empty = {entry[0].no_kk: self._evaluation(entry, self._pinned.rule_set, ())}
        shaped = eligibility.family_results([no_kk], {entry[0].no_kk: entry}, empty, view)[0]
        shaped["kode_wilayah"] = f"{entry[0].region_code:010d}"  # as REST under membership
        return shaped

    def members(self, entry: Entry) -> list[tuple[str, dict[str, Any]]]:
        """The members of a family in REST order; each one's NIK is disclosed (audited)."""
        niks = [as_str(m.nik) for m in entry[1]]
        self.disclosed.update(niks)
        shaped = eligibility.person_results(niks, {entry[0].no_kk: entry}, {}, self._plain_view())
        return list(zip(niks, shaped, strict=True))

    def _evaluation(
        self, entry: Entry, rule_set: RuleSet, programs: tuple[Program, ...]
    ) -> FamilyEvaluation:
        key = (entry[0].no_kk, programs)
        found = self._evaluations.get(key)
        if found is None:
            assert self._pinned is not None
            found = eligibility.evaluate(
                {entry[0].no_kk: entry}, rule_set, self._pinned.snapshot, programs
            )[entry[0].no_kk]
            self._evaluations[key] = found
        return found

    async def _view(
        self, programs: list[str] | None, rule_set_id: str | None, explain: bool
    ) -> tuple[eligibility.View, RuleSet]:
        view = lookup.view_for(self._caller(), programs, explain)  # Principal.allowed_programs
        return view, await self._rule_set(rule_set_id)

    def disclose(self, nik: str) -> None:
        """A component's NIK resolved into the answer: the audit record names it."""
        self.disclosed.add(nik)

    async def person_decisions(
        self,
        nik: str,
        entry: Entry,
        programs: list[str] | None,
        rule_set_id: str | None,
        explain: bool,
    ) -> list[dict[str, Any]]:
        view, rule_set = await self._view(programs, rule_set_id, explain)
        assert self._pinned is not None
        snapshot = self._pinned.snapshot
        # Where REST answers from the stored decisions, so does this (the same condition and
        # the same rendering, app.services.eligibility); elsewhere the engine, as REST's live path.
        async with self.session.use() as conn:
            key = await eligibility.plain_stored_key(conn, snapshot, rule_set, view)
        if key is not None:
            return await self._stored_loader(snapshot, rule_set, key, view).load(nik)
        evaluation = self._evaluation(entry, rule_set, view.programs)
        found = {entry[0].no_kk: entry}
        shaped = eligibility.person_results([nik], found, {entry[0].no_kk: evaluation}, view)
        decisions: list[dict[str, Any]] = shaped[0]["decisions"]
        return decisions

    def _stored_loader(
        self, snapshot: Snapshot, rule_set: RuleSet, key: int, view: eligibility.View
    ) -> DataLoader[str, list[dict[str, Any]]]:
        """People's stored decisions under `view`, the NIKs of one execution step read in one
        statement on the request's connection: REST's rendered answers, their `decisions`."""
        loader = self._stored.get(view)
        if loader is None:
            session = self.session

            async def load(niks: list[str]) -> list[list[dict[str, Any]]]:
                async with session.use() as conn:
                    rendered = await eligibility.people_stored(
                        conn, snapshot, rule_set, key, niks, view
                    )
                # Every NIK here was found in the registry: its stored answer has decisions
                # (a KeyError otherwise, never a silent empty list).
                return [orjson.loads(part)["decisions"] for part in rendered.parts]

            loader = self._stored[view] = DataLoader(load)
        return loader

    async def family_decisions(
        self, entry: Entry, programs: list[str] | None, rule_set_id: str | None, explain: bool
    ) -> list[dict[str, Any]]:
        view, rule_set = await self._view(programs, rule_set_id, explain)
        evaluation = self._evaluation(entry, rule_set, view.programs)
        # As REST's families/lookup: a family's components each name "another" member.
        return shape_decisions(evaluation.family, view.groups, None, view.explain)

    # --- metadata (no personal data, no audit) -----------------------------------------------

    async def snapshots(self) -> list[Snapshot]:
        async with self.session.use() as conn:
            return await snapshots.list_snapshots(conn)

    async def snapshot(self, snapshot_id: str) -> Snapshot:
        async with self.session.use() as conn:
            return await snapshots.get_snapshot(conn, snapshot_id)

    async def rule_sets(self) -> list[RuleSet]:
        async with self.session.use() as conn:
            return await rule_sets.list_rule_sets(conn)

    # --- the audit record, written before the response leaves ---------------------------------

    async def record(self, data: dict[str, Any] | None) -> None:
        """If personal data was looked up and the answer carries data, audit it; fill `meta`.

        The digest covers `orjson.dumps(data)`: the `data` member of the response exactly as
        the router renders it (orjson, no whitespace); errors and extensions are not covered.
        """
        if not self.asked or data is None or self._pinned is None or self.caller is None:
            return
        audit_id = new_audit_id()
        subjects = self.asked + [
            nik_subject(n) for n in sorted(self.disclosed.difference(self.asked_niks))
        ]
        recorded = await lookup.record_access(
            self.state.audit, self.caller, audit_id, OPERATION, self._pinned, subjects,
            self.found, orjson.dumps(data),
        )  # fmt: skip
        self.meta = self._pinned.meta(self.request_id, audit_id)
        # The receipt covers the response's exact bytes: signed once they exist (app.graphql.
        # router), from what the record named.
        self.http.scope.setdefault("state", {})[RECORDED] = (self._pinned, recorded)
