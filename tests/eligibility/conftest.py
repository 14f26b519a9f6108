"""Engine tests' setup: the shipped rule set."""

from __future__ import annotations

import pytest

from app.eligibility import RuleSet, load_rule_set, shipped_rule_sets


@pytest.fixture(scope="session")
def rules() -> RuleSet:
    return load_rule_set(shipped_rule_sets()[0])
