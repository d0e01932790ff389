"""The data-set document: layout, validation and diff (pure, no database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from mxgate.core.transfer import (
    FORMAT_NAME,
    MAX_PROBLEMS,
    DataSet,
    DocumentError,
    foreign_sources,
    read_document,
)
from mxgate.core.transfer_diff import compute_diff, diff_json, diff_lines
from mxgate.core.transfer_text import json_lines, parse_own_yaml, yaml_lines

HASH = "{SHA512-CRYPT}$6$salt$" + "x" * 86

DATA: DataSet = {
    "domain": [("server1.example.com", "maila", "c"), ("other.example.com", None, None)],
    "forward": [
        ("@server1.example.com", "james@example.com", None),
        ("sales@server1.example.com", "a@example.org, b@example.org", "two"),
        ("sales@server1.example.com", "", "an empty destination is allowed"),
    ],
    "relay": [("@other.example.com", "maila", None)],
    "mailbox": [
        ("james@server1.example.com", HASH, 10485760, "maila", None),
        ("Upper@server1.example.com", "{CRYPT}!", None, "maila", "case kept"),
    ],
    "transport": [
        ("server1.example.com", "smtp:[192.0.2.1]:25", "", None),
        ("server1.example.com", "lmtp:unix:/run/dovecot/lmtp", "maila", None),
        ("*", "", "", "empty transport: no route"),
    ],
}

NASTY = [
    "'); DROP TABLE mailbox; --",
    'quote " and backslash \\ and $1 and %s',
    "line\nbreak\ttab \u2028 \x85 \x7f é 😀",
    "- {not: a row}",
    "# not a comment",
]


def document(**tables: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"format": FORMAT_NAME, "version": 1}
    doc.update(tables)
    return doc


def rows_of(data: DataSet) -> dict[str, Any]:
    return {
        table: [dict(zip(names, row, strict=True)) for row in rows]
        for table, rows in data.items()
        for names in [_names(table)]
    }


def _names(table: str) -> tuple[str, ...]:
    from mxgate.core.transfer import SCHEMA

    return SCHEMA[table].names


def problems_of(doc: object, **kwargs: Any) -> list[str]:
    with pytest.raises(DocumentError) as caught:
        read_document(doc, **kwargs)
    return caught.value.problems


# --- layout -----------------------------------------------------------------


def test_yaml_and_json_round_trip_every_value() -> None:
    data = {k: list(v) for k, v in DATA.items()}
    data["mailbox"] = [*data["mailbox"], ("nasty@server1.example.com", NASTY[1], 0, "n", NASTY[2])]
    data["domain"] = [*data["domain"], *[(f"d{i}.example", n, n) for i, n in enumerate(NASTY)]]
    yaml_text = "\n".join(yaml_lines(data)) + "\n"
    json_text = "\n".join(json_lines(data)) + "\n"
    fast = parse_own_yaml(yaml_text)
    assert fast is not None
    # The fast reader reads the text exactly as a YAML parser does.
    assert fast == yaml.safe_load(yaml_text) == json.loads(json_text)
    assert read_document(fast, replace=True).tables == data


def test_one_row_per_line() -> None:
    lines = list(yaml_lines(DATA))
    assert sum(line.startswith("- ") for line in lines) == sum(map(len, DATA.values()))
    assert "format: mxgate-data" in lines and "version: 1" in lines


def test_hand_written_yaml_is_left_to_the_yaml_parser() -> None:
    text = "format: mxgate-data\nversion: 1\ndomain:\n  - domain: a.example\n    node: x\n"
    assert parse_own_yaml(text) is None
    assert parse_own_yaml("format: yes\n") is None  # YAML reads that as a boolean
    assert parse_own_yaml("- {}\n") is None
    doc = yaml.safe_load(text)
    assert read_document(doc).tables["domain"] == [("a.example", "x", None)]


def test_empty_table_forms() -> None:
    assert parse_own_yaml("format: mxgate-data\nversion: 1\ndomain:\nrelay: []\n") == {
        "format": "mxgate-data",
        "version": 1,
        "domain": None,
        "relay": [],
    }


# --- validation -------------------------------------------------------------


def test_defaults_fill_left_out_columns() -> None:
    doc = document(
        domain=[{"domain": "a.example"}],
        mailbox=[{"email": "x@a.example", "password": "p", "node": "n"}],
        transport=[{"domain": "a.example"}],
    )
    tables = read_document(doc).tables
    assert tables["domain"] == [("a.example", None, None)]
    assert tables["mailbox"] == [("x@a.example", "p", 10485760, "n", None)]
    assert tables["transport"] == [("a.example", "", "", None)]
    assert "forward" not in tables  # absent: left alone by an import


@pytest.mark.parametrize(
    ("table", "row", "expected"),
    [
        ("domain", {"domain": "bad_domain!"}, "'bad_domain!': not a domain name"),
        ("domain", {"domain": "bücher.example"}, "write the domain as 'xn--bcher-kva.example'"),
        ("domain", {"domain": "a.example."}, "not a domain name (domain ends with a dot)"),
        ("domain", {"domain": "a.example", "node": 7}, "node 7: must be text, not int"),
        ("domain", {"domain": "a.example", "nodes": "x"}, "unknown column 'nodes'"),
        ("domain", {"domain": "x" * 250 + ".example"}, "the column holds 255"),
        ("domain", {"node": "x"}, "column 'domain' is missing"),
        ("domain", {"domain": "a.example", "comment": "c" * 501}, "501 characters long"),
        ("domain", {"domain": "a.example", "comment": "nul\x00"}, "NUL character"),
        ("mailbox", {"email": "james", "password": "p", "node": "n"}, "user@domain"),
        ("mailbox", {"email": "<j@a.example>", "password": "p", "node": "n"}, "angle brackets"),
        ("mailbox", {"email": "j@", "password": "p", "node": "n"}, "'j@': not a valid address"),
        ("mailbox", {"email": "j@[192.0.2.1]", "password": "p", "node": "n"}, "address literal"),
        ("mailbox", {"email": '"j"@a.example', "password": "p", "node": "n"}, "write it as 'j@"),
        ("mailbox", {"email": "j@a.example", "password": None, "node": "n"}, "must not be null"),
        ("mailbox", {"email": "j@a.example", "password": "p", "node": "n", "quota": True}, "whole"),
        ("mailbox", {"email": "j@a.example", "password": "p", "node": "n", "quota": -1}, "between"),
        ("mailbox", {"email": "j@a.example", "password": "p" * 256, "node": "n"}, "holds 255"),
        ("forward", {"source": "@a.example", "destination": "not an address@"}, "destination"),
        ("forward", {"source": "@bad_d", "destination": "x@y.example"}, "catch-all @domain"),
        ("relay", {"source": "r@a.example"}, "column 'node' is missing"),
        ("transport", {"domain": "a.example", "transport": "bogus:x"}, "unsupported transport"),
        ("transport", {"domain": "a.example", "node": None}, "node None: must not be null"),
        ("transport", {"domain": "..x", "transport": "smtp:"}, "not '*', a domain, .domain"),
    ],
)
def test_bad_values_name_the_value_and_the_rule(
    table: str, row: dict[str, Any], expected: str
) -> None:
    doc = document(domain=[{"domain": "a.example"}])
    doc[table] = [*doc.get(table, []), row]
    problems = problems_of(doc)
    assert any(expected in p for p in problems), problems
    assert any(p.startswith(f"{table} row ") for p in problems), problems


def test_good_transport_keys_and_values() -> None:
    doc = document(
        transport=[
            {"domain": "*", "transport": "smtp:"},
            {"domain": ".example.com", "transport": "relay:[mx.example.com]:587"},
            {"domain": "user@example.com", "transport": "error:5.1.1 gone"},
            {"domain": "x.example", "transport": "smtp:[2001:db8::1]:25", "node": "maila"},
            {"domain": "y.example", "transport": "   "},
        ]
    )
    assert len(read_document(doc).tables["transport"]) == 5


def test_header_and_shape_problems() -> None:
    assert "must be a mapping" in problems_of([1, 2])[0]
    problems = problems_of({"format": "other", "version": 2, "extra": 1, "domain": "x"})
    joined = "\n".join(problems)
    assert "format 'other'" in joined and "version 2" in joined
    assert "unknown top-level key 'extra'" in joined and "'domain': must be a list" in joined
    assert "version True" in problems_of(document(version=True))[0]
    assert "must be a mapping of column names" in problems_of(document(domain=["a.example"]))[0]


def test_duplicate_keys_are_refused_but_case_variants_are_rows_of_their_own() -> None:
    doc = document(domain=[{"domain": "a.example"}, {"domain": "a.example"}])
    assert "repeats row 1" in problems_of(doc)[0]
    doc = document(
        forward=[
            {"source": "x@a.example", "destination": "y@b.example"},
            {"source": "X@a.example", "destination": "y@b.example"},
            {"source": "x@a.example", "destination": "z@b.example"},
        ]
    )
    assert len(read_document(doc).tables["forward"]) == 3


def test_every_problem_is_counted_and_the_report_is_capped() -> None:
    doc = document(domain=[{"domain": f"bad_{i}"} for i in range(MAX_PROBLEMS + 50)])
    with pytest.raises(DocumentError) as caught:
        read_document(doc)
    assert caught.value.total == MAX_PROBLEMS + 50
    assert len(caught.value.problems) == MAX_PROBLEMS
    assert str(caught.value).endswith("... and 50 more problems")


def test_replace_needs_every_table_and_sources_in_the_files_domains() -> None:
    doc = document(domain=[{"domain": "a.example"}])
    assert any("--replace needs every table" in p for p in problems_of(doc, replace=True))
    full = document(
        domain=[{"domain": "a.example"}],
        forward=[{"source": "x@b.example", "destination": "y@a.example"}],
        relay=[{"source": "@A.example", "node": "n"}],
        mailbox=[],
        transport=None,
    )
    problems = problems_of(full, replace=True)
    assert len(problems) == 1
    assert (
        "forward row 1: source 'x@b.example': the domain 'b.example' is not one of ours"
        in (problems[0])
    )
    # Without --replace the database's domains count too (the caller adds them).
    kept = read_document(full)
    assert foreign_sources(kept, ["B.example"]) == []


def test_progress_is_reported() -> None:
    seen: list[int] = []
    read_document(document(domain=[{"domain": "a.example"}]), progress=seen.append)
    assert seen == [1]


# --- diff -------------------------------------------------------------------


def test_diff_without_and_with_replace() -> None:
    current: DataSet = {
        "domain": [("a.example", None, None), ("gone.example", None, None)],
        "mailbox": [("j@a.example", "old-hash", 1, "n", None)],
    }
    wanted: DataSet = {
        "domain": [("a.example", "n", None), ("new.example", None, None)],
        "mailbox": [("j@a.example", "new-hash", 1, "n", None)],
    }
    diff = compute_diff(current, wanted, replace=False)
    domain = diff.tables["domain"]
    assert domain.added == [("new.example", None, None)]
    assert domain.changed == [(("a.example", None, None), ("a.example", "n", None))]
    assert domain.removed == [] and domain.kept == 1
    assert diff.tables["forward"].writes == 0
    replaced = compute_diff(current, wanted, replace=True)
    assert replaced.tables["domain"].removed == [("gone.example", None, None)]
    assert replaced.writes == 4


def test_diff_output_never_shows_a_password_hash() -> None:
    current: DataSet = {"mailbox": [("j@a.example", "old-hash", 1, "n", None)]}
    wanted: DataSet = {
        "mailbox": [
            ("j@a.example", "new-hash", 2, "n", None),
            ("k@a.example", "k-hash", 1, "n", None),
        ]
    }
    diff = compute_diff(current, wanted, replace=False)
    text = "\n".join(diff_lines(diff))
    assert "~ mailbox j@a.example: password changed, quota 1 -> 2" in text
    assert "+ mailbox k@a.example" in text
    rendered = json.dumps(diff_json(diff))
    assert "hash" not in rendered
    changed = diff_json(diff)["tables"]["mailbox"]["rows"]["changed"]  # type: ignore[index]
    assert changed == [
        {
            "key": {"email": "j@a.example"},
            "columns": {
                "password": {"old": "(hidden)", "new": "(hidden)"},
                "quota": {"old": 1, "new": 2},
            },
        }
    ]


def test_diff_lines_are_limited() -> None:
    wanted: DataSet = {"domain": [(f"d{i}.example", None, None) for i in range(30)]}
    lines = diff_lines(compute_diff({}, wanted, replace=False), limit=5)
    assert lines[0].startswith("domain     +30 added")
    assert sum(line.startswith("  + domain") for line in lines) == 5
    assert "  ... and 25 more domain changes (--json lists them all)" in lines
    assert diff_lines(compute_diff({}, {}, replace=False))[-1] == "no changes"


def test_rows_of_helper_matches_the_layout() -> None:
    # The document a test writes by hand reads back as the rows it came from.
    doc = document(**rows_of(DATA))
    assert read_document(doc, replace=True).tables == DATA
