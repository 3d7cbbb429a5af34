"""Write-back: minimal, comment-preserving, atomic rewrites of prompt files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_promptopt.errors import WriteBackError
from pytest_promptopt.prompts.prompt import Demo, Prompt, load_prompt
from pytest_promptopt.prompts.writeback import apply_write, plan_write

YAML_PROMPT = """\
# Intent classifier. Comments must survive write-back.
model: default            # served model
temperature: 0
messages:
  # the instruction the optimizer rewrites
  - role: system
    content: |
      Classify the intent of the message.
      Reply with one word.
  - role: user
    content: "Message: {message}"   # input
max_tokens: 8
"""

NEW_INSTRUCTION = "Classify the user's intent.\nReply with exactly one lowercase word.\n"


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path.resolve() / name
    path.write_bytes(data)
    return path


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    """The removed and added lines of a unified diff (without the file headers)."""
    removed = [ln[1:].rstrip("\n") for ln in diff.splitlines(keepends=True)
               if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:].rstrip("\n") for ln in diff.splitlines(keepends=True)
             if ln.startswith("+") and not ln.startswith("+++")]
    return removed, added


def rewrite(path: Path, instruction: str | None = None, demos: tuple[Demo, ...] | None = None) -> Prompt:
    original = load_prompt(path)
    candidate = original
    if instruction is not None:
        candidate = candidate.with_instruction(instruction)
    if demos is not None:
        candidate = candidate.with_demos(demos)
    apply_write(plan_write(original, candidate))
    return load_prompt(path)


# -- YAML ----------------------------------------------------------------------------------------


def test_instruction_only_changes_its_lines(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    original = load_prompt(path)
    pending = plan_write(original, original.with_instruction(NEW_INSTRUCTION))
    assert pending.changed
    removed, added = changed_lines(pending.diff())
    assert removed == ["      Classify the intent of the message.", "      Reply with one word."]
    assert added == ["      Classify the user's intent.", "      Reply with exactly one lowercase word."]
    apply_write(pending)
    assert path.read_text() == YAML_PROMPT.replace(
        "      Classify the intent of the message.\n      Reply with one word.\n",
        "      Classify the user's intent.\n      Reply with exactly one lowercase word.\n",
    )


def test_comments_and_key_order_survive(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    rewrite(path, NEW_INSTRUCTION, (Demo({"message": "where is my parcel"}, "tracking"),))
    text = path.read_text()
    for comment in ("# Intent classifier. Comments must survive write-back.", "# served model",
                    "# the instruction the optimizer rewrites", "# input"):
        assert comment in text
    keys = [ln.split(":")[0] for ln in text.splitlines() if ln and ln[0].isalpha()]
    assert keys == ["model", "temperature", "messages", "max_tokens", "demos"]


def test_unchanged_candidate_is_a_no_op(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    original = load_prompt(path)
    pending = plan_write(original, original)
    assert not pending.changed
    assert pending.diff() == ""
    before = os.stat(path).st_mtime_ns
    apply_write(pending)
    assert os.stat(path).st_mtime_ns == before


def test_demos_written_and_reloaded_equal(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    demos = (
        Demo({"message": "cancel my order"}, "cancel"),
        # characters that need quoting in YAML, and a multi-line answer
        Demo({"message": 'say "hi": {now} # not a comment'}, "line one\nline two"),
        Demo({"message": "ünïcödé ✓"}, "yes: really"),
    )
    reloaded = rewrite(path, demos=demos)
    assert reloaded.demos == demos
    assert reloaded.instruction == load_prompt(path).instruction
    removed, added = changed_lines(plan_write(load_prompt(path), load_prompt(path)).diff())
    assert removed == added == []


def test_demos_replaced_not_appended(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    rewrite(path, demos=(Demo({"message": "a"}, "x"),))
    reloaded = rewrite(path, demos=(Demo({"message": "b"}, "y"),))
    assert reloaded.demos == (Demo({"message": "b"}, "y"),)
    assert path.read_text().count("demos:") == 1


def test_demo_diff_touches_only_demos(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    original = load_prompt(path)
    pending = plan_write(original, original.with_demos((Demo({"message": "hi"}, "greeting"),)))
    removed, added = changed_lines(pending.diff())
    assert removed == []
    assert added == ["demos:", '  - inputs: {message: "hi"}', '    output: "greeting"']


def test_single_line_quoted_instruction(tmp_path: Path) -> None:
    text = "messages:\n- role: system\n  content: \"Be brief about {topic}.\"\n- role: user\n  content: hi\n"
    path = write_bytes(tmp_path, "p.yaml", text.encode())
    reloaded = rewrite(path, "Be very brief about {topic}.")
    assert reloaded.instruction == "Be very brief about {topic}."
    # The indentation style (sequences not indented) is kept, so only one line differs.
    assert path.read_text() == text.replace("Be brief", "Be very brief")


def test_crlf_newlines_preserved(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.replace("\n", "\r\n").encode())
    reloaded = rewrite(path, NEW_INSTRUCTION, (Demo({"message": "x"}, "y"),))
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n")  # no bare LF
    assert b"\r\r" not in data
    assert b"# served model" in data
    assert reloaded.instruction == NEW_INSTRUCTION  # YAML normalizes line breaks in scalars
    assert reloaded.demos == (Demo({"message": "x"}, "y"),)


def test_utf8_bom_preserved(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", b"\xef\xbb\xbf" + YAML_PROMPT.encode())
    reloaded = rewrite(path, NEW_INSTRUCTION)
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert not data.startswith(b"\xef\xbb\xbf\xef\xbb\xbf")
    assert reloaded.instruction == NEW_INSTRUCTION


def test_bom_and_crlf_together(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", b"\xef\xbb\xbf" + YAML_PROMPT.replace("\n", "\r\n").encode())
    original = load_prompt(path)
    pending = plan_write(original, original.with_instruction(NEW_INSTRUCTION))
    assert len(changed_lines(pending.diff())[0]) == 2
    apply_write(pending)
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and data.count(b"\n") == data.count(b"\r\n")


def test_file_mode_preserved(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    os.chmod(path, 0o640)
    rewrite(path, NEW_INSTRUCTION)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_no_temp_files_left(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    rewrite(path, NEW_INSTRUCTION, (Demo({"message": "x"}, "y"),))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_rendered_messages_follow_the_written_file(tmp_path: Path) -> None:
    # What the optimizer scored is what the reloaded file renders.
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    original = load_prompt(path)
    candidate = original.with_instruction(NEW_INSTRUCTION).with_demos((Demo({"message": "hey"}, "greeting"),))
    apply_write(plan_write(original, candidate))
    assert load_prompt(path).render({"message": "bye"}) == candidate.render({"message": "bye"})


# -- text prompts --------------------------------------------------------------------------------


def test_text_prompt_instruction_write_back(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.txt", b"Summarize {text}.\n")
    reloaded = rewrite(path, "Summarize {text} in one sentence.\n")
    assert path.read_text() == "Summarize {text} in one sentence.\n"
    assert reloaded.render({"text": "x"}) == [{"role": "user", "content": "Summarize x in one sentence.\n"}]


def test_text_prompt_demos_render_the_same_after_reload(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.md", b"Q: {q}\nA:")
    original = load_prompt(path)
    # braces in a demo must be escaped in the file, or the reload would see a placeholder
    candidate = original.with_demos((Demo({"q": "2+2"}, "4"), Demo({"q": "{a} set"}, "{b}")))
    apply_write(plan_write(original, candidate))
    reloaded = load_prompt(path)
    assert reloaded.placeholders == frozenset({"q"})
    assert reloaded.render({"q": "5+5"}) == candidate.render({"q": "5+5"})


def test_text_prompt_crlf_and_bom_preserved(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.txt", b"\xef\xbb\xbfHello {name}\r\nBye\r\n")
    original = load_prompt(path)
    apply_write(plan_write(original, original.with_demos((Demo({"name": "a"}, "b"),))))
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    assert b"\r\r" not in data  # the template's own CRLFs must not be doubled
    assert data.count(b"\n") == data.count(b"\r\n")
    assert data.endswith(b"Hello {name}\r\nBye\r\n")


# -- refusals leave the file untouched -------------------------------------------------------------


def test_changed_before_plan(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    original = load_prompt(path)
    edited = YAML_PROMPT.replace("temperature: 0", "temperature: 1").encode()
    path.write_bytes(edited)
    with pytest.raises(WriteBackError, match="changed on disk"):
        plan_write(original, original.with_instruction(NEW_INSTRUCTION))
    assert path.read_bytes() == edited


def test_changed_between_plan_and_apply(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    original = load_prompt(path)
    pending = plan_write(original, original.with_instruction(NEW_INSTRUCTION))
    edited = (YAML_PROMPT + "# my edit\n").encode()
    path.write_bytes(edited)
    with pytest.raises(WriteBackError) as info:
        apply_write(pending)
    assert str(path) in str(info.value)
    assert "Rerun" in str(info.value)
    assert path.read_bytes() == edited
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_read_only_file_refused(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    original = load_prompt(path)
    pending = plan_write(original, original.with_instruction(NEW_INSTRUCTION))
    os.chmod(path, 0o444)
    try:
        with pytest.raises(WriteBackError) as info:
            apply_write(pending)
        message = str(info.value)
        assert "read-only" in message and str(path) in message
        assert "chmod u+w" in message  # the fix
        assert path.read_bytes() == YAML_PROMPT.encode()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]
    finally:
        os.chmod(path, 0o644)


def test_diff_of_a_file_without_final_newline_keeps_lines_apart(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.rstrip("\n").encode())
    original = load_prompt(path)
    diff = plan_write(original, original.with_instruction(NEW_INSTRUCTION)).diff()
    assert "\\ No newline at end of file\n" in diff
    assert all(line[:1] in ("-", "+", " ", "@", "\\") for line in diff.splitlines())  # nothing ran together


# -- fidelity: only the replaced fields' bytes change (issue 12) -----------------------------------

FIDELITY = """\
# header   comment,  spaces kept
model: default            # served model
temperature: 0      # sampling
messages:
  - role: system
    content: {content}
  - role: user
    content: "Message: {{message}}"      # input,   several spaces
max_tokens: 8    # short

# before demos
demos: []                 # few-shot examples; --optimize may fill these
description: 'single'     # untouched
"""

STYLES = {  # the instruction as written in the file -> the text it loads as
    "literal": ("|\n      Classify the intent.\n      One word.\n", "Classify the intent.\nOne word.\n"),
    "strip": ("|-\n      Classify the intent.\n      One word.\n", "Classify the intent.\nOne word."),
    "folded": (">\n      Classify the intent\n      in one word.\n", "Classify the intent in one word.\n"),
    "double": ('"Classify the intent."     # the instruction\n', "Classify the intent."),
    "single": ("'Classify the intent.'   # the instruction\n", "Classify the intent."),
    "plain": ("Classify the intent.       # the instruction\n", "Classify the intent."),
}


def _around(old: bytes, new: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """The common prefix and suffix of two byte strings, and what differs between them."""
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    return old[:head], old[head:len(old) - tail], new[head:len(new) - tail], old[len(old) - tail:]


@pytest.mark.parametrize("style", sorted(STYLES))
def test_an_instruction_edit_changes_only_the_instruction_bytes(tmp_path: Path, style: str) -> None:
    written, loaded = STYLES[style]
    path = write_bytes(tmp_path, "p.yaml", FIDELITY.format(content=written.rstrip("\n")).encode())
    before = path.read_bytes()
    assert load_prompt(path).instruction == loaded
    new = "Name the intent of the message." + ("\n" if loaded.endswith("\n") else "")
    after = rewrite(path, instruction=new)
    assert after.instruction == new
    data = path.read_bytes()
    _, old_part, new_part, _ = _around(before, data)
    # everything outside the old value is byte for byte the same, inline comments and their spaces included
    assert before.index(old_part) >= before.index(b"content: ") and b"#" not in old_part + new_part
    assert old_part.strip() and old_part in written.encode()
    if style in ("literal", "strip", "folded"):
        header = written.split("\n")[0].encode()
        assert data.count(b"content: " + header + b"\n") == 1  # the chomping follows the text: | stays |


def test_a_literal_block_keeps_its_trailing_newline_through_with_instruction(tmp_path: Path) -> None:
    """An optimizer proposal usually has no trailing newline: the instruction keeps the original's,
    so `|` is not turned into `|-` (and the rendered message does not change by a newline)."""
    path = write_bytes(tmp_path, "p.yaml", FIDELITY.format(content=STYLES["literal"][0].rstrip("\n")).encode())
    original = load_prompt(path)
    assert original.with_instruction("Name the intent.").instruction == "Name the intent.\n"
    strip = write_bytes(tmp_path, "s.yaml", FIDELITY.format(content=STYLES["strip"][0].rstrip("\n")).encode())
    assert load_prompt(strip).with_instruction("Name the intent.\n").instruction == "Name the intent.\n"
    rewrite(path, instruction="Name the intent.")
    assert b"    content: |\n      Name the intent.\n  - role: user" in path.read_bytes()


def test_a_one_line_instruction_that_becomes_a_block_keeps_its_comment(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", FIDELITY.format(content=STYLES["double"][0].rstrip("\n")).encode())
    before = path.read_bytes()
    rewrite(path, instruction="Name the intent.\nOne word.")
    data = path.read_bytes()
    assert b'    content: |-     # the instruction\n      Name the intent.\n      One word.\n  - role: user' in data
    assert data.replace(b'|-     # the instruction\n      Name the intent.\n      One word.',
                        b'"Classify the intent."     # the instruction') == before


def test_demos_edit_changes_only_the_demos_value(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", FIDELITY.format(content=STYLES["literal"][0].rstrip("\n")).encode())
    before = path.read_bytes()
    demos = (Demo({"message": "where is my card"}, "card_arrival"), Demo({"message": "pin?"}, "pin"))
    assert rewrite(path, demos=demos).demos == demos
    data = path.read_bytes()
    line = b"demos: []                 # few-shot examples; --optimize may fill these\n"
    block = (b'  - inputs: {message: "where is my card"}\n    output: "card_arrival"\n'
             b'  - inputs: {message: "pin?"}\n    output: "pin"\n')  # indented as the file's messages list
    # `[]` becomes two spaces (the comment keeps its column), the list follows the line, nothing else moves
    assert data == before.replace(line, line.replace(b"[]", b"  ") + block)
    # and back to none: the block goes, `[]` comes back, the comment is where it was
    rewrite(path, demos=())
    assert path.read_bytes() == before.replace(b"demos: []                 #", b"demos: []" + b" " * 20 + b"#")
    assert load_prompt(path).demos == ()


def test_demos_and_markers_and_crlf_only_the_demos_change(tmp_path: Path) -> None:
    text = ("---\r\n# head\r\nmessages:\r\n- role: system\r\n  content: Classify.    # instr\r\n"
            "- role: user\r\n  content: '{message}'\r\ndemos:      # none yet\r\n...\r\n")
    path = write_bytes(tmp_path, "p.yaml", text.encode())
    demos = (Demo({"message": "hi"}, "greet"),)
    assert rewrite(path, demos=demos).demos == demos
    data = path.read_bytes()
    assert data == text.replace("demos:      # none yet\r\n",
                                'demos:      # none yet\r\n- inputs: {message: "hi"}\r\n  output: "greet"\r\n').encode()


def test_demos_added_after_a_last_key_without_value(tmp_path: Path) -> None:
    text = "messages:\n  - role: user\n    content: '{message}'\ndescription:\n"
    path = write_bytes(tmp_path, "p.yaml", text.encode())
    demos = (Demo({"message": "hi"}, "greet"),)
    assert rewrite(path, demos=demos).demos == demos
    assert path.read_bytes().decode().startswith(text)


# -- links: write-back keeps a prompt file's hard links and symlinks -----------------------------

def test_hard_linked_prompt_file_stays_linked_with_the_new_text_and_its_mode(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    os.chmod(path, 0o640)
    other = tmp_path / "shared" / "intent.yaml"
    other.parent.mkdir()
    os.link(path, other)
    inode = os.stat(path).st_ino
    rewrite(path, NEW_INSTRUCTION)
    for name in (path, other):  # one inode, two links, the old mode: the link was not broken
        info = os.stat(name)
        assert (info.st_ino, info.st_nlink, stat.S_IMODE(info.st_mode)) == (inode, 2, 0o640)
    assert load_prompt(other).instruction == NEW_INSTRUCTION
    assert "# Intent classifier." in other.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "shared"]  # the backup is gone


def test_hard_linked_write_that_fails_puts_the_old_bytes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_promptopt.atomic import write_atomic

    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    os.link(path, tmp_path / "q.yaml")
    target = os.stat(path).st_ino
    real_fsync, failed = os.fsync, []

    def fsync(fd: int) -> None:  # the disk fills up when the new bytes of the prompt file are flushed
        if os.fstat(fd).st_ino == target and not failed:
            failed.append(fd)
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"x" * 10_000)
    assert failed and path.read_bytes() == YAML_PROMPT.encode() and os.stat(path).st_nlink == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "q.yaml"]


def test_backup_left_by_a_killed_in_place_write_is_not_overwritten(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "p.yaml", YAML_PROMPT.encode())
    os.link(path, tmp_path / "q.yaml")
    backup = tmp_path / "p.yaml.promptopt-backup"
    backup.write_text("the old bytes of a write that was killed")
    with pytest.raises(WriteBackError) as info:
        rewrite(path, NEW_INSTRUCTION)
    message = str(info.value)
    assert f"{backup}: a backup left by an interrupted in-place write of {path}" in message
    assert f"cp {backup} {path}" in message
    assert path.read_text() == YAML_PROMPT and backup.read_text() == "the old bytes of a write that was killed"


def test_symlinked_prompt_file_stays_a_link_and_its_target_gets_the_new_text(tmp_path: Path) -> None:
    real = write_bytes(tmp_path, "real.yaml", YAML_PROMPT.encode())
    os.chmod(real, 0o604)
    link = tmp_path / "linked" / "p.yaml"
    link.parent.mkdir()
    link.symlink_to(real)
    rewrite(link, NEW_INSTRUCTION)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load_prompt(real).instruction == NEW_INSTRUCTION and stat.S_IMODE(os.stat(real).st_mode) == 0o604
    assert sorted(p.name for p in link.parent.iterdir()) == ["p.yaml"]


def test_atomic_writer_follows_a_symlink_for_every_file_it_writes(tmp_path: Path) -> None:
    # pool files, baselines and reports are written through the same writer, without a loader
    # that resolves the path first
    from pytest_promptopt.atomic import write_atomic

    real = write_bytes(tmp_path, "pool.yaml", b"- old\n")
    os.chmod(real, 0o640)
    link = tmp_path / "suite" / "pool.yaml"
    link.parent.mkdir()
    link.symlink_to(os.path.relpath(real, link.parent))
    write_atomic(link, b"- new\n")
    assert link.is_symlink() and real.read_bytes() == b"- new\n"
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
