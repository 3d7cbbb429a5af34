"""Prompt files: loading YAML and text prompts, validation errors, rendering with demos."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pytest_promptopt.errors import PromptFileError, TemplateError
from pytest_promptopt.prompts.prompt import (
    MAX_PROMPT_FILE_BYTES,
    Demo,
    Prompt,
    examples_block,
    load_prompt,
)

FULL = """\
# Sentiment classifier
description: classify reviews
model: gpt-test   # the served model
temperature: 0.3
top_p: 0.9
max_tokens: 16
seed: 7
stop: ["\\n"]
min_pass_rate: 0.75
messages:
  - role: system
    content: |
      Classify the sentiment of a review.
      Answer positive or negative.
  - role: user
    content: "Review: {review}"
demos:
  - inputs: {review: "Loved it"}
    output: positive
  - inputs: {review: "Awful"}
    output: negative
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    # Resolved so paths compare equal to the ones load_prompt reports.
    path = tmp_path.resolve() / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, name: str, text: str) -> PromptFileError:
    path = write(tmp_path, name, text)
    with pytest.raises(PromptFileError) as info:
        load_prompt(path)
    assert str(path) in str(info.value)  # every error names the file
    assert "fix:" in str(info.value)  # ... and a fix
    return info.value


# -- loading ---------------------------------------------------------------------------------


def test_load_full_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", FULL)
    prompt = load_prompt(path)
    assert prompt.kind == "chat"
    assert prompt.path == path
    assert [m.role for m in prompt.messages] == ["system", "user"]
    assert prompt.messages[0].content == "Classify the sentiment of a review.\nAnswer positive or negative.\n"
    assert prompt.messages[1].content == "Review: {review}"
    assert prompt.demos == (Demo({"review": "Loved it"}, "positive"), Demo({"review": "Awful"}, "negative"))
    assert prompt.model == "gpt-test"
    assert not prompt.uses_model_default
    assert prompt.sampling() == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 16, "seed": 7, "stop": ["\n"]}
    assert prompt.min_pass_rate == 0.75
    assert prompt.placeholders == frozenset({"review"})
    assert prompt.instruction_index == 0 and prompt.input_index == 1
    assert prompt.source_digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_sampling_params_are_plain_python(tmp_path: Path) -> None:
    # ruamel round-trip types must not leak into request params (they hash and serialize).
    prompt = load_prompt(write(tmp_path, "p.yaml", FULL))
    params = prompt.sampling()
    assert type(params["temperature"]) is float
    assert type(params["max_tokens"]) is int
    assert type(params["stop"]) is list and type(params["stop"][0]) is str


@pytest.mark.parametrize("model", ["default", "''", "null"])
def test_model_default_names(tmp_path: Path, model: str) -> None:
    prompt = load_prompt(write(tmp_path, "p.yaml", f"model: {model}\nmessages:\n  - role: user\n    content: hi\n"))
    assert prompt.uses_model_default


def test_relative_path_resolves_against_root(tmp_path: Path) -> None:
    write(tmp_path, "p.yml", "messages:\n  - role: user\n    content: hi\n")
    prompt = load_prompt("p.yml", root=tmp_path)
    assert prompt.path == tmp_path.resolve() / "p.yml"


@pytest.mark.parametrize("suffix", [".txt", ".md"])
def test_text_prompt(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, f"p{suffix}", "Summarize:\n{text}\n")
    prompt = load_prompt(path)
    assert prompt.kind == "text"
    assert prompt.demos == ()
    assert prompt.placeholders == frozenset({"text"})
    assert prompt.render({"text": "long story"}) == [{"role": "user", "content": "Summarize:\nlong story\n"}]


def test_utf8_bom_is_not_part_of_the_text(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "p.txt"
    path.write_bytes(b"\xef\xbb\xbfHi {name}")
    assert load_prompt(path).render({"name": "Ada"})[0]["content"] == "Hi Ada"


def test_developer_role_is_the_instruction(tmp_path: Path) -> None:
    prompt = load_prompt(write(
        tmp_path, "p.yaml",
        "messages:\n  - role: user\n    content: a\n  - role: developer\n    content: rules\n",
    ))
    assert prompt.instruction == "rules"


# -- load errors ------------------------------------------------------------------------------


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "p.yaml", "messages:\n  - role: user\n    content: a: b\n")
    assert "invalid YAML" in str(err)
    assert err.line == 3


def test_invalid_yaml_tab_names_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "p.yaml", "model: x\nmessages:\n\t- role: user\n")
    assert err.line == 3
    assert "p.yaml:3" in str(err)


def test_missing_messages(tmp_path: Path) -> None:
    err = load_error(tmp_path, "p.yaml", "model: x\ntemperature: 0\n")
    assert "missing 'messages'" in str(err)
    assert err.field == "messages"


@pytest.mark.parametrize("value", ["[]", "hello"])
def test_messages_must_be_non_empty_list(tmp_path: Path, value: str) -> None:
    err = load_error(tmp_path, "p.yaml", f"messages: {value}\n")
    assert "non-empty list" in str(err)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n"])
def test_top_level_must_be_mapping(tmp_path: Path, text: str) -> None:
    err = load_error(tmp_path, "p.yaml", text)
    assert "top level must be a mapping" in str(err)


def test_unknown_role(tmp_path: Path) -> None:
    err = load_error(
        tmp_path, "p.yaml",
        "messages:\n  - role: user\n    content: a\n  - role: robot\n    content: b\n",
    )
    assert "unknown role 'robot'" in str(err)
    assert err.field == "messages[1].role"
    assert err.line == 4
    assert "system, developer, user, assistant" in str(err)


def test_unknown_top_level_field(tmp_path: Path) -> None:
    err = load_error(tmp_path, "p.yaml", "model: x\nmesages: []\nmessages:\n  - role: user\n    content: a\n")
    assert "unknown field 'mesages'" in str(err)
    assert err.field == "mesages"
    assert err.line == 2


def test_unknown_message_field(tmp_path: Path) -> None:
    err = load_error(tmp_path, "p.yaml", "messages:\n  - role: user\n    content: a\n    name: bob\n")
    assert "unknown message field 'name'" in str(err)
    assert err.line == 4


def test_content_must_be_text(tmp_path: Path) -> None:
    err = load_error(tmp_path, "p.yaml", "messages:\n  - role: user\n    content: 5\n")
    assert "content must be text, got int" in str(err)
    assert err.field == "messages[0].content"


def test_duplicate_key_is_invalid_yaml(tmp_path: Path) -> None:
    # Silently taking the last value would hide half of the prompt.
    err = load_error(tmp_path, "p.yaml", "messages:\n  - role: user\n    content: a\nmessages: []\n")
    assert "duplicate key" in str(err)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "p.yaml"
    path.write_bytes(b"messages:\n  - role: user\n    content: caf\xe9\n")
    with pytest.raises(PromptFileError) as info:
        load_prompt(path)
    assert "not valid UTF-8" in str(info.value)
    assert info.value.line == 3
    assert "save the file as UTF-8" in str(info.value)


def test_huge_file_refused(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "big.txt"
    path.write_bytes(b"x" * (MAX_PROMPT_FILE_BYTES + 1))
    with pytest.raises(PromptFileError) as info:
        load_prompt(path)
    assert "1,000,001 bytes" in str(info.value)
    assert "limited to 1,000,000" in str(info.value)


def test_file_at_the_size_limit_loads(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "big.txt"
    path.write_bytes(b"x" * MAX_PROMPT_FILE_BYTES)
    assert load_prompt(path).kind == "text"


@pytest.mark.parametrize("value", ["3", "-0.1", "hot", "true", "[0.5]"])
def test_bad_temperature(tmp_path: Path, value: str) -> None:
    err = load_error(tmp_path, "p.yaml", f"temperature: {value}\nmessages:\n  - role: user\n    content: a\n")
    assert "temperature must be a number from 0.0 to 2.0" in str(err)
    assert err.field == "temperature"
    assert err.line == 1


@pytest.mark.parametrize("key", ["max_tokens", "seed"])
def test_whole_number_params(tmp_path: Path, key: str) -> None:
    err = load_error(tmp_path, "p.yaml", f"messages:\n  - role: user\n    content: a\n{key}: 1.5\n")
    assert f"{key} must be a whole number" in str(err)
    assert err.line == 4


@pytest.mark.parametrize("value", ["1.5", "high"])
def test_bad_min_pass_rate(tmp_path: Path, value: str) -> None:
    err = load_error(tmp_path, "p.yaml", f"min_pass_rate: {value}\nmessages:\n  - role: user\n    content: a\n")
    assert "min_pass_rate must be a number from 0 to 1" in str(err)


def test_model_must_be_string(tmp_path: Path) -> None:
    err = load_error(tmp_path, "p.yaml", "model: 4\nmessages:\n  - role: user\n    content: a\n")
    assert "model must be a string" in str(err)


@pytest.mark.parametrize(
    ("demos", "problem", "line"),
    [
        ("demos: nope\n", "demos must be a list", 4),
        ("demos:\n  - inputs: {a: 1}\n", "each demo must be", 5),  # no output
        ("demos:\n  - inputs: {a: 1}\n    output: x\n    note: y\n", "each demo must be", 5),  # extra key
        ("demos:\n  - inputs: [1, 2]\n    output: x\n", "each demo must be", 5),  # inputs not a mapping
        ("demos:\n  - just a string\n", "each demo must be", 5),
    ],
)
def test_bad_demos(tmp_path: Path, demos: str, problem: str, line: int) -> None:
    err = load_error(tmp_path, "p.yaml", "messages:\n  - role: user\n    content: '{a}'\n" + demos)
    assert problem in str(err)
    assert err.line == line


def test_unsupported_suffix(tmp_path: Path) -> None:
    err = load_error(tmp_path, "p.json", "{}")
    assert "unsupported prompt file type '.json'" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="prompt file not found"):
        load_prompt(tmp_path / "nope.yaml")


def test_directory_is_not_a_prompt(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="is a directory"):
        load_prompt(tmp_path)


# -- rendering with demos ---------------------------------------------------------------------


def test_chat_demos_inserted_after_system_messages(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, "p.yaml", FULL))
    assert prompt.render({"review": "Meh"}) == [
        {"role": "system", "content": "Classify the sentiment of a review.\nAnswer positive or negative.\n"},
        {"role": "user", "content": "Review: Loved it"},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "Review: Awful"},
        {"role": "assistant", "content": "negative"},
        {"role": "user", "content": "Review: Meh"},
    ]


def test_chat_demos_after_every_leading_system_message(tmp_path: Path) -> None:
    prompt = load_prompt(write(
        tmp_path, "p.yaml",
        "messages:\n"
        "  - role: system\n    content: one\n"
        "  - role: developer\n    content: two\n"
        "  - role: user\n    content: 'Hi {name}'\n"
        "demos:\n  - inputs: {name: A}\n    output: hello A\n",
    ))
    roles = [(m["role"], m["content"]) for m in prompt.render({"name": "B"})]
    assert roles == [
        ("system", "one"), ("developer", "two"),
        ("user", "Hi A"), ("assistant", "hello A"),
        ("user", "Hi B"),
    ]


def test_chat_demos_of_a_system_only_prompt_become_an_examples_block(tmp_path: Path) -> None:
    # No user message to imitate: the demos are shown as an examples block in the message that
    # carries the inputs, and the request still ends with the real input.
    prompt = load_prompt(write(
        tmp_path, "p.yaml",
        "messages:\n"
        "  - role: system\n    content: Translate to French.\n"
        "  - role: developer\n    content: 'Text: {text}'\n"
        "demos:\n  - inputs: {text: Hello}\n    output: Bonjour\n"
        "  - inputs: {text: Thanks}\n    output: Merci\n",
    ))
    rendered = prompt.render({"text": "Goodbye"})
    assert [m["role"] for m in rendered] == ["system", "developer"]
    assert rendered[0]["content"] == "Translate to French."
    body = rendered[1]["content"]
    assert body.endswith("Text: Goodbye")
    assert body.index("Input: text: Hello\nOutput: Bonjour") < body.index("Input: text: Thanks\nOutput: Merci")
    assert prompt.with_demos(()).render({"text": "Goodbye"}) == [
        {"role": "system", "content": "Translate to French."},
        {"role": "developer", "content": "Text: Goodbye"},
    ]


def test_chat_demo_inputs_fill_only_their_variables(tmp_path: Path) -> None:
    # A demo overrides the case-specific variable; shared ones come from the call.
    prompt = load_prompt(write(
        tmp_path, "p.yaml",
        "messages:\n  - role: system\n    content: 'Answer in {lang}.'\n"
        "  - role: user\n    content: '{q}'\n",
    )).with_demos((Demo({"q": "2+2"}, "4"),))
    rendered = prompt.render({"lang": "French", "q": "3+3"})
    assert rendered[0]["content"] == "Answer in French."
    assert rendered[1:] == [
        {"role": "user", "content": "2+2"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "3+3"},
    ]


def test_text_demos_become_examples_block(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, "p.txt", "Q: {q}\nA:")).with_demos(
        (Demo({"q": "2+2"}, "4"), Demo({"q": "3+3"}, "6"))
    )
    [message] = prompt.render({"q": "5+5"})
    assert message["role"] == "user"
    content = message["content"]
    assert content.startswith("Examples:\n")
    assert content.endswith("Q: 5+5\nA:")
    assert content.index("Input: q: 2+2\nOutput: 4") < content.index("Input: q: 3+3\nOutput: 6") < content.index("Q: 5+5")
    assert content == examples_block(prompt.demos) + "Q: 5+5\nA:"


def test_prompt_is_immutable_under_with_demos(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, "p.yaml", FULL))
    other = prompt.with_demos(())
    assert prompt.demos and other.demos == ()
    assert other.render({"review": "x"}) == [
        {"role": "system", "content": prompt.instruction},
        {"role": "user", "content": "Review: x"},
    ]


# -- with_instruction ---------------------------------------------------------------------------


def chat_prompt(tmp_path: Path) -> Prompt:
    return load_prompt(write(
        tmp_path, "p.yaml",
        "messages:\n  - role: system\n    content: 'Reply in {lang}.'\n"
        "  - role: user\n    content: '{q}'\n",
    ))


def test_with_instruction_replaces_system_message(tmp_path: Path) -> None:
    prompt = chat_prompt(tmp_path)
    new = prompt.with_instruction("Always reply in {lang}, briefly.")
    assert new.instruction == "Always reply in {lang}, briefly."
    assert new.render({"lang": "German", "q": "hi"})[0]["content"] == "Always reply in German, briefly."
    assert prompt.instruction == "Reply in {lang}."  # the original is untouched


def test_with_instruction_refuses_dropped_placeholder(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        chat_prompt(tmp_path).with_instruction("Reply briefly.")
    assert "dropped: ['lang']" in str(info.value)
    assert "added: none" in str(info.value)


def test_with_instruction_refuses_added_placeholder(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        chat_prompt(tmp_path).with_instruction("Reply in {lang} to {user}.")
    assert "added: ['user']" in str(info.value)
    assert "dropped: none" in str(info.value)


def test_with_instruction_refuses_unsafe_syntax(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        chat_prompt(tmp_path).with_instruction("Reply in {lang.upper}.")
    assert "(proposed)" in str(info.value)


def test_with_instruction_allows_literal_braces(tmp_path: Path) -> None:
    new = chat_prompt(tmp_path).with_instruction('Reply in {lang} as {{"answer": ...}}.')
    assert new.render({"lang": "en", "q": "x"})[0]["content"] == 'Reply in en as {"answer": ...}.'
