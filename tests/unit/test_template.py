"""Safe `{name}` rendering: only plain identifiers are substituted, everything else refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_promptopt.errors import TemplateError
from pytest_promptopt.prompts.prompt import load_prompt
from pytest_promptopt.prompts.template import (
    Placeholder,
    Template,
    TemplateOrigin,
    escape,
    parse,
)

# -- what renders ---------------------------------------------------------------------------


def test_plain_placeholder_substituted() -> None:
    assert Template("Hello {name}!").render({"name": "Ada"}) == "Hello Ada!"


def test_repeated_placeholder_listed_once_in_order() -> None:
    t = Template("{b} {a} {b}")
    assert t.placeholders == ("b", "a")
    assert t.render({"a": "1", "b": "2"}) == "2 1 2"


def test_non_string_values_are_str() -> None:
    assert Template("n={n}").render({"n": 3}) == "n=3"


def test_double_braces_are_literal() -> None:
    t = Template("{{x}} and {{}} and {{{y}}}")
    assert t.placeholders == ("y",)
    assert t.render({"y": "Y"}) == "{x} and {} and {Y}"


def test_value_with_braces_is_not_reparsed() -> None:
    # A value is data: its braces (and lookalike fields) must come out verbatim.
    assert Template("{a}").render({"a": "{b.__class__} {0}"}) == "{b.__class__} {0}"


def test_parse_segments() -> None:
    assert parse("a {x} b") == ("a ", Placeholder("x"), " b")


def test_escape_round_trips_through_render() -> None:
    text = "json: {\"k\": [1, 2]} }{"
    assert Template(escape(text)).render({}) == text


def test_no_placeholders_renders_unchanged() -> None:
    assert Template("nothing here").render({}) == "nothing here"


# -- what is refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{x.attr}", "attribute access"),
        ("{x.__class__}", "attribute access"),
        ("{x[0]}", "index access"),
        ("{x:>10}", "format spec"),
        ("{x!r}", "conversion"),
        ("{}", "empty placeholder"),
        ("{0}", "positional placeholder"),
        ("{ x }", "is not a placeholder"),
        ("{x-y}", "is not a placeholder"),
    ],
)
def test_refused_fields(source: str, problem: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template(f"before {source} after").validate()
    message = str(info.value)
    assert problem in message
    assert "fix:" in message


@pytest.mark.parametrize("source", ["{x.attr}", "{x[0]}", "{x:>10}", "{x!r}"])
def test_refusal_fix_names_the_variable(source: str) -> None:
    # The fix should point at the plain form of the same variable.
    with pytest.raises(TemplateError) as info:
        Template(source).validate()
    assert "write {x}" in str(info.value)


@pytest.mark.parametrize(
    ("source", "which"),
    [("open {x", "'{'"), ("close x}", "'}'"), ("nested {a{b}}", "'{'"), ("{", "'{'"), ("}", "'}'")],
)
def test_unbalanced_braces(source: str, which: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template(source).validate()
    assert f"unbalanced {which}" in str(info.value)


def test_refusal_never_renders_attribute() -> None:
    # Rendering a refused template must raise, not leak object internals.
    with pytest.raises(TemplateError):
        Template("{x.__class__.__mro__}").render({"x": object()})


# -- error messages name file, field, line and fix -------------------------------------------


def test_origin_in_message(tmp_path: Path) -> None:
    origin = TemplateOrigin(tmp_path / "p.yaml", "messages[0].content", 10)
    with pytest.raises(TemplateError) as info:
        Template("line one\nline two {x.y}", origin).validate()
    err = info.value
    assert err.line == 11
    assert err.field == "messages[0].content"
    assert f"{tmp_path / 'p.yaml'}:11" in str(err)
    assert "messages[0].content" in str(err)


def test_yaml_prompt_bad_placeholder_line_in_block_scalar(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "bad.yaml"
    path.write_text(
        "# header comment\n"  # 1
        "messages:\n"  # 2
        "  - role: system\n"  # 3
        "    content: |\n"  # 4
        "      You are helpful.\n"  # 5
        "      Use {user.name} here.\n"  # 6
        "  - role: user\n"  # 7
        "    content: '{q}'\n",  # 8
        encoding="utf-8",
    )
    with pytest.raises(TemplateError) as info:
        load_prompt(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{path}:6" in message
    assert "messages[0].content" in message
    assert "attribute access" in message
    assert "fix:" in message and "{user}" in message


def test_yaml_prompt_bad_placeholder_line_in_quoted_scalar(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "bad.yaml"
    path.write_text(
        "model: default\n"  # 1
        "messages:\n"  # 2
        "  - role: system\n"  # 3
        "    content: \"Be brief.\"\n"  # 4
        "  - role: user\n"  # 5
        "    content: \"Q: {0}\"\n",  # 6
        encoding="utf-8",
    )
    with pytest.raises(TemplateError) as info:
        load_prompt(path)
    assert info.value.line == 6
    assert info.value.field == "messages[1].content"
    assert "positional placeholder" in str(info.value)


def test_text_prompt_bad_placeholder_line(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "t.txt"
    path.write_text("first\nsecond\nthird {x!r}\n", encoding="utf-8")
    with pytest.raises(TemplateError) as info:
        load_prompt(path)
    assert info.value.line == 3
    assert f"{path}:3" in str(info.value)
    assert "(field 'template')" in str(info.value)


# -- variables ----------------------------------------------------------------------------------


def test_missing_variable_named(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "p.txt"
    path.write_text("Translate {text} into {language}.", encoding="utf-8")
    prompt = load_prompt(path)
    with pytest.raises(TemplateError) as info:
        prompt.render({"text": "hi"})
    message = str(info.value)
    assert "missing variable 'language'" in message
    assert "'text'" in message  # what was received
    assert "language=..." in message  # the fix
    assert str(path) in message


def test_unknown_variable_named(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "p.txt"
    path.write_text("Translate {text}.", encoding="utf-8")
    prompt = load_prompt(path)
    with pytest.raises(TemplateError) as info:
        prompt.render({"text": "hi", "txet": "typo"})
    message = str(info.value)
    assert "unknown variable(s) ['txet']" in message
    assert "['text']" in message
    assert "fix:" in message


def test_template_missing_variable_without_origin() -> None:
    with pytest.raises(TemplateError) as info:
        Template("{a}{b}").render({"a": 1})
    assert "missing variable 'b'" in str(info.value)
    assert "<template>" in str(info.value)


def test_a_proposal_as_it_reads_keeps_the_placeholders_and_escapes_every_other_brace() -> None:
    from pytest_promptopt.prompts.template import from_reading, reading

    text = 'Reply with JSON only: {"amount": <number>} for {text}; see {label}.'
    source, dropped, added = from_reading(text, ["text", "labels"])
    assert source == 'Reply with JSON only: {{"amount": <number>}} for {text}; see {{label}}.'
    assert (dropped, added) == (["labels"], ["label"])
    assert reading(source) == text
