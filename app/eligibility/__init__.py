"""The pure eligibility engine: rule sets as data and the decisions of docs/rules.md."""

from app.eligibility.engine import (
    PROGRAM_ORDER,
    SCHOOL_LEVEL_NAMES,
    SCHOOL_LEVELS,
    Component,
    Criterion,
    Decision,
    Family,
    FamilyEvaluation,
    Member,
    Program,
    age_on,
    evaluate_family,
    stored_decision,
)
from app.eligibility.rule_set import (
    RuleSet,
    RuleSetError,
    load_rule_set,
    rule_set_in_force,
    shipped_rule_sets,
)

__all__ = [
    "PROGRAM_ORDER",
    "SCHOOL_LEVELS",
    "SCHOOL_LEVEL_NAMES",
    "Component",
    "Criterion",
    "Decision",
    "Family",
    "FamilyEvaluation",
    "Member",
    "Program",
    "RuleSet",
    "RuleSetError",
    "age_on",
    "evaluate_family",
    "load_rule_set",
    "rule_set_in_force",
    "shipped_rule_sets",
    "stored_decision",
]
