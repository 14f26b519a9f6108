"""Rule sets: the shipped file, schema errors naming the field, checksum and canonical form."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from pathlib import Path

import orjson
import pytest

from app.eligibility import RuleSet, RuleSetError, load_rule_set, rule_set_in_force
from app.eligibility.rule_set import COMPONENT_ORDER, shipped_rule_sets

SHIPPED = Path(__file__).resolve().parents[2] / "app/eligibility/rule_sets/kepmensos-79-2025.toml"


def _variant(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    """The shipped file with each `old` replaced once by `new` (and `old` required present)."""
    text = SHIPPED.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "variant.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_rule_set_has_the_domain_values(rules: RuleSet) -> None:
    assert shipped_rule_sets() == [SHIPPED]
    assert rules.id == SHIPPED.stem == "kepmensos-79-2025"
    assert rules.effective_from == date(2025, 5, 1)
    pkh = rules.pkh
    assert (pkh.deciles, pkh.max_members, pkh.tranches_per_year) == ((1, 4), 4, 4)
    assert [(c.id, c.yearly_rupiah, c.cap) for c in pkh.components] == [
        ("HAMIL", 3_000_000, 2),
        ("USIA_DINI", 3_000_000, 2),
        ("DISABILITAS_BERAT", 2_400_000, 1),
        ("LANSIA", 2_400_000, 1),
        ("SMA", 2_000_000, None),
        ("SMP", 1_500_000, None),
        ("SD", 900_000, None),
    ]
    by_id = {c.id: c for c in pkh.components}
    assert by_id["USIA_DINI"].ages == (0, 6)
    assert by_id["LANSIA"].min_age == 60
    assert {by_id[s].ages for s in ("SD", "SMP", "SMA")} == {(6, 21)}
    assert (rules.bpnt.deciles, rules.bpnt.monthly_rupiah) == ((1, 5), 200_000)
    assert (rules.pbi.deciles, rules.pbi.monthly_rupiah) == ((1, 5), 42_000)
    sr = rules.sekolah_rakyat
    assert (sr.deciles, sr.ages) == ((1, 2), (6, 18))
    assert (sr.levels.SD, sr.levels.SMP, sr.levels.SMA) == ((6, 12), (13, 15), (16, 18))


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ('id = "kepmensos-79-2025"', 'id = "Kepmensos 79"', "id", "pattern"),
        ("deciles = [1, 4]", "deciles = [0, 4]", "pkh.deciles.0", "greater than or equal to 1"),
        ("deciles = [1, 4]", "deciles = [1, 11]", "pkh.deciles.1", "less than or equal to 10"),
        ("deciles = [1, 4]", "deciles = [4, 1]", "pkh.deciles", "lo <= hi"),
        ("deciles = [1, 4]", "deciles = [1]", "pkh.deciles.1", "Field required"),
        ("max_members = 4", "max_members = 0", "pkh.max_members", "greater than or equal to 1"),
        ("monthly_rupiah = 200_000", "monthly_rupiah = 0", "bpnt.monthly_rupiah", "greater than 0"),
        ("monthly_rupiah = 42_000", 'monthly_rupiah = "42000"', "pbi.monthly_rupiah", "integer"),
        ('id = "SD"', 'id = "SMA"', "pkh.components", "exactly once"),
        ('id = "SMP"', 'id = "SD"', "pkh.components", "exactly once"),
        ('id = "HAMIL"', 'id = "HAMIL_MUDA"', "pkh.components.0.id", "HAMIL"),
        ("cap = 2\n", "", "pkh.components.0.cap", "Field required"),
        ("cap = 2\n", "cap = 0\n", "pkh.components.0.cap", "greater than or equal to 1"),
        ("min_age = 60", "min_age = 200", "pkh.components.3.min_age", "less than or equal to 130"),
        ("min_age = 60", "", "pkh.components.3", "LANSIA needs `min_age`"),
        ("ages = [0, 6]", "ages = [6, 0]", "pkh.components.1.ages", "lo <= hi"),
        ("yearly_rupiah = 900_000", "yearly_rupiah = 900_001", "pkh", "tranches_per_year"),
        ("SMP = [13, 15]", "SMP = [14, 15]", "sekolah_rakyat", "contiguous"),
        ("SMA = [16, 18]", "SMA = [16, 17]", "sekolah_rakyat", "span ages"),
        ("[pbi]\n", "[pbi]\nquota = 1\n", "pbi.quota", "Extra inputs"),
        ("effective_from = 2025-05-01", 'effective_from = "soon"', "effective_from", "date"),
    ],
)
def test_schema_errors_name_the_field(
    tmp_path: Path, old: str, new: str, field: str, words: str
) -> None:
    path = _variant(tmp_path, (old, new))
    with pytest.raises(RuleSetError) as caught:
        load_rule_set(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert re.search(rf"(^|[ ;]){re.escape(field)}: [^;]*{re.escape(words)}", message), message


def test_a_missing_program_is_named(tmp_path: Path) -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    path = tmp_path / "no-sr.toml"
    path.write_text(text[: text.index("[sekolah_rakyat]")], encoding="utf-8")
    with pytest.raises(RuleSetError, match=r"sekolah_rakyat: Field required"):
        load_rule_set(path)


def test_invalid_toml_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = _variant(tmp_path, ("max_members = 4", "max_members = = 4"))
    with pytest.raises(RuleSetError, match=r"variant\.toml: not valid TOML"):
        load_rule_set(path)


def _cosmetic(text: str) -> str:
    """Strip every comment, reorder keys and tables, respell numbers: no parameter changes."""
    lines = [re.sub(r"\s+#.*$", "", line) for line in text.splitlines() if not line.startswith("#")]
    text = "\n".join(lines) + "\n\n\n"
    for old, new in [
        ("3_000_000", "3000000"),
        (
            "deciles = [1, 5]\nmonthly_rupiah = 200_000",
            "monthly_rupiah   =   200000\ndeciles = [ 1,5 ]",
        ),
        (
            "levels = { SD = [6, 12], SMP = [13, 15], SMA = [16, 18] }",
            "levels = { SMA = [16, 18], SD = [6, 12], SMP = [13, 15] }",
        ),
    ]:
        assert old in text
        text = text.replace(old, new)
    # Move the [pbi] table before [bpnt] and the title first.
    head, rest = text.split("[bpnt]", 1)
    bpnt, rest = rest.split("[pbi]", 1)
    pbi, sr = rest.split("[sekolah_rakyat]", 1)
    title = next(line for line in head.splitlines() if line.startswith("title ="))
    head = title + "\n" + head.replace(title + "\n", "")
    return f"{head}[pbi]{pbi}[bpnt]{bpnt}[sekolah_rakyat]{sr}"


def test_checksum_ignores_cosmetic_changes(rules: RuleSet, tmp_path: Path) -> None:
    path = tmp_path / "cosmetic.toml"
    path.write_text(_cosmetic(SHIPPED.read_text(encoding="utf-8")), encoding="utf-8")
    assert path.read_text(encoding="utf-8") != SHIPPED.read_text(encoding="utf-8")
    assert "#" not in path.read_text(encoding="utf-8")
    reloaded = load_rule_set(path)
    assert reloaded == rules
    assert reloaded.checksum == rules.checksum


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("min_age = 60", "min_age = 70"),
        ("cap = 2\n", "cap = 3\n"),
        ('cap = "none"', "cap = 5"),
        ("deciles = [1, 4]", "deciles = [1, 3]"),
        ("monthly_rupiah = 42_000", "monthly_rupiah = 44_000"),
        ("yearly_rupiah = 900_000", "yearly_rupiah = 1_000_000"),
        ("SD = [6, 12], SMP = [13, 15]", "SD = [6, 11], SMP = [12, 15]"),
        ("effective_from = 2025-05-01", "effective_from = 2025-06-01"),
        ('id = "kepmensos-79-2025"', 'id = "kepmensos-79-2025-b"'),
    ],
)
def test_checksum_changes_with_any_parameter(
    rules: RuleSet, tmp_path: Path, old: str, new: str
) -> None:
    changed = load_rule_set(_variant(tmp_path, (old, new)))
    assert changed.checksum != rules.checksum


def test_checksum_is_sha256_of_the_canonical_json(rules: RuleSet) -> None:
    canonical = rules.canonical_json()
    assert rules.checksum == "sha256:" + hashlib.sha256(canonical).hexdigest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", rules.checksum)
    parsed = orjson.loads(canonical)
    assert "checksum" not in parsed
    assert canonical == orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    # null, not a string, is how "no cap" is stored.
    assert parsed["pkh"]["components"][4] == {
        "id": "SMA",
        "yearly_rupiah": 2_000_000,
        "cap": None,
        "ages": [6, 21],
        "min_age": None,
    }


@pytest.mark.parametrize("as_bytes", [True, False])
def test_canonical_round_trip(rules: RuleSet, as_bytes: bool) -> None:
    data = rules.canonical_json()
    reloaded = RuleSet.from_canonical(data if as_bytes else orjson.loads(data))
    assert reloaded == rules
    assert reloaded.checksum == rules.checksum
    assert reloaded.canonical_json() == data


def test_from_canonical_validates(rules: RuleSet) -> None:
    data = orjson.loads(rules.canonical_json())
    data["pkh"]["components"] = data["pkh"]["components"][::-1]
    with pytest.raises(RuleSetError, match=r"pkh\.components: .*in that order"):
        RuleSet.from_canonical(data)
    with pytest.raises(RuleSetError, match="rule set JSON"):
        RuleSet.from_canonical(b"{not json")


def test_the_component_order_is_rules_md_table_order() -> None:
    assert COMPONENT_ORDER == (
        "HAMIL",
        "USIA_DINI",
        "DISABILITAS_BERAT",
        "LANSIA",
        "SMA",
        "SMP",
        "SD",
    )


def _with_effective(rules: RuleSet, rule_set_id: str, effective: date) -> RuleSet:
    data = orjson.loads(rules.canonical_json())
    data["id"], data["effective_from"] = rule_set_id, effective.isoformat()
    return RuleSet.from_canonical(data)


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (date(2025, 4, 30), None),
        (date(2025, 5, 1), "kepmensos-79-2025"),
        (date(2025, 12, 31), "kepmensos-79-2025"),
        (date(2026, 1, 1), "rules-2026"),
        (date(2027, 1, 1), "rules-2026"),
    ],
)
def test_rule_set_in_force_is_the_latest_effective_on_the_date(
    rules: RuleSet, on: date, expected: str | None
) -> None:
    later = _with_effective(rules, "rules-2026", date(2026, 1, 1))
    found = rule_set_in_force([later, rules], on)
    assert (found.id if found else None) == expected


def test_two_rule_sets_effective_the_same_day_are_ambiguous(rules: RuleSet) -> None:
    twin = _with_effective(rules, "twin-rules", rules.effective_from)
    assert rule_set_in_force([rules, rules], date(2026, 1, 1)) is rules
    with pytest.raises(RuleSetError, match="name one"):
        rule_set_in_force([rules, twin], date(2026, 1, 1))
