"""What a decision may disclose to a client: derived from the data a value was computed from.

The one rule (docs/disclosure.md), applied by every face (REST people and families, bulk, both
GraphQL paths) through `shape_decisions`: a value appears only if the client holds the field
group of every field it was computed from. The decision itself (eligible, recipient, benefit,
Sekolah Rakyat level) is the `decision` group.

- A PKH component names a member and reveals a condition: its kind needs the groups in
  `COMPONENT_GROUPS`, and a component of a member other than the one asked about needs
  `membership` too. A component the client may not see is left out of `components`.
- A component's `taken` and `reason` come from the walk over every candidate of the family
  (other members, their health, ages and schooling): they need `SELECTION_GROUPS`.
- A criterion's `observed` value needs the groups in `CRITERION_GROUPS`; `required` and
  `passed` stay.
- Sekolah Rakyat `priority` is the family's decile: it needs `decile`.

GraphQL checks the same table before execution (app.graphql.types declares it on the fields).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from app.eligibility import Decision, Program

# Every field group a PKH component's kind is computed from. HAMIL is the pregnancy flag,
# DISABILITAS_BERAT the disability code (health); USIA_DINI and LANSIA an age (identity: the
# birth date); SD, SMP and SMA the school status and level (attributes) and an age within the
# level's range (identity).
COMPONENT_GROUPS: Final[dict[str, frozenset[str]]] = {
    "HAMIL": frozenset({"health"}),
    "DISABILITAS_BERAT": frozenset({"health"}),
    "USIA_DINI": frozenset({"identity"}),
    "LANSIA": frozenset({"identity"}),
    "SD": frozenset({"attributes", "identity"}),
    "SMP": frozenset({"attributes", "identity"}),
    "SMA": frozenset({"attributes", "identity"}),
}
# Another member's NIK (a component naming them, a members list).
OTHER_MEMBER: Final = "membership"
# What the selection of components reads: every member and every condition of the family.
SELECTION_GROUPS: Final = frozenset({"membership", "health", "identity", "attributes"})
# The groups a criterion's observed value is computed from.
CRITERION_GROUPS: Final[dict[str, frozenset[str]]] = {
    "decile_in_range": frozenset({"decile"}),
    "not_excluded": frozenset({"attributes"}),  # the family's ASN/TNI/Polri flag
    "has_component": SELECTION_GROUPS,  # how many members were taken
    "age_in_range": frozenset({"identity"}),
    # The level attended (attributes) or, when not attending, the level of the age (identity).
    "school_level": frozenset({"attributes", "identity"}),
}
PRIORITY_GROUPS: Final = frozenset({"decile"})  # Sekolah Rakyat priority is the decile
# The union of what any component kind needs: GraphQL's static check of `components.component`.
ANY_COMPONENT_GROUPS: Final = frozenset().union(*COMPONENT_GROUPS.values())


# A change list's line (app.services.changes): `decile` (both releases') needs decile, `family`
# (No. KK, relationship, region in both) membership; `changes` and their reasons (criteria ids
# whose `passed` flipped) are the decision group, as `passed` is.
CHANGE_GROUPS: Final[dict[str, frozenset[str]]] = {
    "decile": frozenset({"decile"}),
    "family": frozenset({"membership"}),
}


def change_fields(groups: Iterable[str]) -> frozenset[str]:
    """The optional fields of a change list's line these granted groups may see."""
    granted = frozenset(groups)
    return frozenset(name for name, needs in CHANGE_GROUPS.items() if needs <= granted)


@dataclass(frozen=True, slots=True)
class Disclosure:
    """The rule resolved for one set of granted field groups (made once per set)."""

    groups: frozenset[str]
    kinds: frozenset[str]  # component kinds the client may see
    others: bool  # components of members other than the one asked about
    selection: bool  # a component's taken and reason
    observed: frozenset[str]  # criteria whose observed value is shown (others: left out)
    priority: bool
    complete: bool  # nothing is left out: the engine's shape as is


_rules: dict[frozenset[str], Disclosure] = {}


def disclosure(groups: Iterable[str]) -> Disclosure:
    """The rule for these granted groups; memoised (clients, hence group sets, are few)."""
    key = groups if isinstance(groups, frozenset) else frozenset(groups)
    rule = _rules.get(key)
    if rule is None:
        kinds = frozenset(k for k, needs in COMPONENT_GROUPS.items() if needs <= key)
        observed = frozenset(c for c, needs in CRITERION_GROUPS.items() if needs <= key)
        others, selection, priority = (
            OTHER_MEMBER in key,
            key >= SELECTION_GROUPS,
            key >= PRIORITY_GROUPS,
        )
        rule = Disclosure(
            groups=key,
            kinds=kinds,
            others=others,
            selection=selection,
            observed=observed,
            priority=priority,
            complete=others
            and selection
            and priority
            and kinds == frozenset(COMPONENT_GROUPS)
            and observed == frozenset(CRITERION_GROUPS),
        )
        if len(_rules) >= 1024:
            _rules.clear()
        _rules[key] = rule
    return rule


def shape_decisions(
    decisions: Sequence[Decision],
    groups: Iterable[str],
    asker_nik: str | None,
    explain: bool,
) -> list[dict[str, Any]]:
    """The engine's decisions in the API shape (`Decision.to_dict`), less what `groups` may not
    see. `asker_nik`: the person the answer is about (their own components need no
    `membership`); None for a family's answer, where every component names "another" member."""
    rule = disclosure(groups)
    if rule.complete or (rule.priority and not explain):  # a plain answer shows only priority
        return [d.to_dict(explain) for d in decisions]
    out: list[dict[str, Any]] = []
    for d in decisions:
        shaped = d.to_dict(False)
        if not rule.priority and d.program is Program.SEKOLAH_RAKYAT:
            del shaped["priority"]
        if explain:
            if d.components is not None:
                shaped["components"] = [
                    _component(c.nik, c.component, c.yearly_rupiah, c.taken, c.reason, rule)
                    for c in d.components
                    if c.component in rule.kinds and (rule.others or c.nik == asker_nik)
                ]
            criteria = []
            for c in d.criteria:
                shown = c.to_dict()
                if c.id not in rule.observed:  # an unknown criterion too: fail closed
                    del shown["observed"]
                criteria.append(shown)
            shaped["criteria"] = criteria
        out.append(shaped)
    return out


def _component(
    nik: str, kind: str, yearly: int, taken: bool, reason: str | None, rule: Disclosure
) -> dict[str, Any]:
    out: dict[str, Any] = {"nik": nik, "component": kind, "yearly_rupiah": yearly}
    if rule.selection:
        out["taken"] = taken
        out["reason"] = reason
    return out
