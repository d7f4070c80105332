"""JSONC as opencode accepts it: comments and trailing commas, strings untouched."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencode_wrapper._jsonc import loads_jsonc, strip_jsonc


def test_strict_json_is_parsed_as_is() -> None:
    assert loads_jsonc('{"a": [1, 2, {"b": null}]}') == {"a": [1, 2, {"b": None}]}


def test_line_and_block_comments_are_dropped() -> None:
    source = """
    // leading comment
    {
      /* block
         comment */ "model": "anthropic/claude", // trailing comment
      "share": /* inline */ "disabled"
    }
    // comment at EOF without newline"""
    assert loads_jsonc(source) == {"model": "anthropic/claude", "share": "disabled"}


def test_trailing_commas_in_objects_and_arrays_are_dropped() -> None:
    source = '{"a": [1, 2, 3,], "b": {"c": true,},}'
    assert loads_jsonc(source) == {"a": [1, 2, 3], "b": {"c": True}}


def test_trailing_comma_followed_by_comments_and_newlines() -> None:
    source = '{"a": 1, // last one\n /* really */\n}'
    assert loads_jsonc(source) == {"a": 1}


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1:4096/v1",
        "/* not a comment */",
        "a // b",
        'escaped \\" quote // still string',
        "ends with backslash \\",
        ",}",
        ",]",
        "ünïcödé ✓",
    ],
)
def test_comment_and_comma_lookalikes_inside_strings_survive(value: str) -> None:
    # Feed the *JSONC* path (the trailing comma makes strict JSON fail) with the value in a string.
    source = '{"v": ' + json.dumps(value, ensure_ascii=False) + ", // c\n}"
    assert loads_jsonc(source) == {"v": value}


def test_strip_jsonc_keeps_escapes_verbatim() -> None:
    source = '{"path": "C:\\\\dir\\\\file", "q": "say \\"hi\\""} // x'
    assert strip_jsonc(source) == '{"path": "C:\\\\dir\\\\file", "q": "say \\"hi\\""} '


def test_comma_between_values_is_kept() -> None:
    assert loads_jsonc("[1, /* c */ 2, 3]") == [1, 2, 3]


def test_unterminated_block_comment_eats_the_rest() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_jsonc('{"a": 1 /* never closed }')


@pytest.mark.parametrize(
    "source", ["{a: 1}", "{'a': 1}", '{"a": 1', "", "// only a comment", '{"a": "unterminated}']
)
def test_invalid_jsonc_raises_json_decode_error(source: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_jsonc(source)


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_strip_jsonc_is_the_identity_on_any_strict_json(value: Any) -> None:
    source = json.dumps(value, ensure_ascii=False)
    assert json.loads(strip_jsonc(source)) == json.loads(source)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=20), min_size=1, max_size=5))
def test_commented_and_trailing_comma_versions_parse_to_the_same_object(value: dict[str, str]) -> None:
    items = [f"  {json.dumps(k)}: {json.dumps(v)}, // note {i}" for i, (k, v) in enumerate(value.items())]
    source = "/* header */\n{\n" + "\n".join(items) + "\n}\n"
    assert loads_jsonc(source) == value
