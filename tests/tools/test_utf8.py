"""tools/utf8.py: text with lone surrogates made printable, text without them untouched."""

from __future__ import annotations

import json
import os

from tools.utf8 import (
    encodable,
    from_printable,
    lone_surrogate,
    printable,
    printable_json,
    printable_value,
)

BAD = os.fsdecode(b"a\xffb")  # "a\udcffb", as Python reads such a file name


def test_undecodable_bytes_become_hex_escapes_and_other_surrogates_unicode_escapes() -> None:
    assert not encodable(BAD) and encodable("héllo") and encodable("plain")
    assert printable(BAD) == "a\\xffb"
    assert printable("x\ud800y") == "x\\ud800y"
    text = "héllo"
    assert printable(text) is text


def test_values_are_copied_only_where_a_string_changes() -> None:
    clean = {"path": "/ok.txt", "lines": ["é", 1, None], "pair": ("a", "b")}
    assert printable_value(clean) is clean
    dirty = {"path": f"/{BAD}", BAD: [1, BAD], "pair": ("a", BAD), "kept": {"x": "y"}}
    shown = printable_value(dirty)
    assert shown == {
        "path": "/a\\xffb",
        "a\\xffb": [1, "a\\xffb"],
        "pair": ("a", "a\\xffb"),
        "kept": {"x": "y"},
    }
    assert shown["kept"] is dirty["kept"]
    assert dirty["path"] == f"/{BAD}"  # the original is not changed


def test_json_text_stays_valid_json_with_the_escape_as_its_value() -> None:
    value = {"name": BAD, "note": 'a "quoted" \\ backslash', "é": "ü"}
    text = printable_json(json.dumps(value, ensure_ascii=False))
    text.encode("utf-8")  # no longer raises
    assert json.loads(text) == {"name": "a\\xffb", "note": value["note"], "é": "ü"}
    clean = json.dumps({"é": "ü"}, ensure_ascii=False)
    assert printable_json(clean) is clean


def test_lone_surrogate_names_where_the_bad_string_is() -> None:
    assert lone_surrogate({"cmd": "ok", "env": {"K": ["x", "\ud800"]}}) == "env.K[1]"
    assert lone_surrogate({"\udfff": 1}) == "a key"
    assert lone_surrogate({"fine": ["é"]}) is None


def test_from_printable_turns_the_byte_escapes_back_into_the_name() -> None:
    name = os.fsdecode(b"dir\xff/caf\xe9.txt")
    assert from_printable(printable(name)) == name
    assert from_printable("ascii \\x41 and \\x7f stay") == "ascii \\x41 and \\x7f stay"
