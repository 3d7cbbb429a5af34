"""Write-back of retrieval rules: the retrieve section in the YAML, the pool in its sidecar file."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from pytest_promptopt.errors import WriteBackError
from pytest_promptopt.prompts.prompt import Demo, load_prompt
from pytest_promptopt.prompts.writeback import MAX_POOL_DIFF_LINES, apply_write, plan_write

PROMPT = """\
# Intent classifier. Comments must survive write-back.
temperature: 0            # deterministic
messages:
  - role: system
    content: "Classify into one of: {labels}."
  - role: user
    content: "{text}"   # the message
demos: []                 # static demos
max_tokens: 8
"""

POOL = (
    Demo({"text": "my card has not arrived"}, "card_arrival"),
    Demo({"text": "reset my PIN"}, "change_pin"),
    Demo({"text": "payment declined"}, "declined_card_payment"),
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path.resolve() / name
    path.write_text(text, encoding="utf-8")
    return path


def files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


def test_new_rule_writes_the_section_and_a_sidecar(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT)
    original = load_prompt(path)
    candidate = original.with_retrieval(POOL, k=3)
    pending = plan_write(original, candidate)
    assert "+retrieve:" in pending.diff() and "intent.pool.yaml (new)" in pending.diff()
    apply_write(pending)
    text = path.read_text()
    # the rest of the file is untouched: comments, key order, the static demos line
    assert text.startswith(PROMPT.replace("max_tokens: 8\n", ""))
    assert text.endswith("demos: []                 # static demos\nretrieve:\n  k: 3\n  by: bm25\n"
                         "  pool: intent.pool.yaml\nmax_tokens: 8\n")
    assert files(tmp_path) == ["intent.pool.yaml", "intent.yaml"]
    pool_text = (tmp_path / "intent.pool.yaml").read_text()
    assert pool_text.startswith("# Demo pool of intent.yaml")
    assert '- inputs: {text: "reset my PIN"}\n  output: "change_pin"\n' in pool_text
    reloaded = load_prompt(path)
    assert reloaded.retrieval == candidate.retrieval
    assert reloaded.render({"text": "PIN reset", "labels": "L"})[-3:] == [
        {"role": "user", "content": "reset my PIN"}, {"role": "assistant", "content": "change_pin"},
        {"role": "user", "content": "PIN reset"}]


def test_a_new_rule_with_an_order_other_than_the_default_writes_it(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT)
    original = load_prompt(path)
    candidate = original.with_retrieval(POOL, k=4, order="majority_last")
    apply_write(plan_write(original, candidate))
    assert "retrieve:\n  k: 4\n  by: bm25\n  order: majority_last\n  pool: intent.pool.yaml\n" in path.read_text()
    assert load_prompt(path).retrieval == candidate.retrieval


def test_changing_the_rule_edits_in_place_and_keeps_the_pool_header(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT + "retrieve:\n  k: 2   # per call\n  pool: intent.pool.yaml\n")
    write(tmp_path, "intent.pool.yaml", "# my labelled cases\n# keep\n- inputs: {text: a}\n  output: x\n")
    original = load_prompt(path)
    candidate = original.with_retrieval(POOL, k=4, order="nearest_first")
    apply_write(plan_write(original, candidate))
    assert path.read_text() == PROMPT + ("retrieve:\n  k: 4   # per call\n  pool: intent.pool.yaml\n"
                                         "  by: bm25\n  order: nearest_first\n")
    pool_text = (tmp_path / "intent.pool.yaml").read_text()
    assert pool_text.startswith("# my labelled cases\n# keep\n- inputs: {text: \"my card has not arrived\"}")
    assert load_prompt(path).retrieval == candidate.retrieval


def test_only_k_changed_leaves_the_pool_file_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT + "retrieve:\n  k: 2\n  by: bm25\n  pool: p.yaml\n")
    pool_path = write(tmp_path, "p.yaml", "- inputs: {text: a}   # hand-written\n  output: x\n")
    before = pool_path.read_bytes()
    original = load_prompt(path)
    pending = plan_write(original, original.with_retrieval(original.retrieval.pool, k=1))  # type: ignore[union-attr]
    assert pending.sidecar is None
    apply_write(pending)
    assert pool_path.read_bytes() == before
    assert "  k: 1\n" in path.read_text()


def test_inline_pool_stays_inline(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", PROMPT + "retrieve:\n  pool:\n    - inputs: {text: a}\n      output: x\n")
    original = load_prompt(path)
    candidate = original.with_retrieval(POOL[:2], k=2)
    pending = plan_write(original, candidate)
    assert pending.sidecar is None
    apply_write(pending)
    assert files(tmp_path) == ["p.yaml"]
    assert load_prompt(path).retrieval == candidate.retrieval


def test_removing_the_rule_keeps_the_pool_file(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT + "retrieve:\n  k: 2\n  pool: intent.pool.yaml\n")
    pool_path = write(tmp_path, "intent.pool.yaml", "- inputs: {text: a}\n  output: x\n")
    original = load_prompt(path)
    apply_write(plan_write(original, original.without_retrieval()))
    assert path.read_text() == PROMPT
    assert pool_path.read_text() == "- inputs: {text: a}\n  output: x\n"


def test_a_strangers_file_at_the_pool_path_is_never_overwritten(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT)
    stranger = write(tmp_path, "intent.pool.yaml", "# someone's notes\n")
    original = load_prompt(path)
    with pytest.raises(WriteBackError, match="already exists and is not this prompt's pool"):
        plan_write(original, original.with_retrieval(POOL))
    assert stranger.read_text() == "# someone's notes\n" and path.read_text() == PROMPT


def test_pool_edited_during_the_run_is_not_overwritten(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT + "retrieve:\n  pool: intent.pool.yaml\n")
    pool_path = write(tmp_path, "intent.pool.yaml", "- inputs: {text: a}\n  output: x\n")
    original = load_prompt(path)
    pending = plan_write(original, original.with_retrieval(POOL))
    pool_path.write_text("- inputs: {text: mine}\n  output: y\n")
    with pytest.raises(WriteBackError, match="changed on disk during the run"):
        apply_write(pending)
    assert pool_path.read_text() == "- inputs: {text: mine}\n  output: y\n"
    assert path.read_text() == PROMPT + "retrieve:\n  pool: intent.pool.yaml\n"
    assert files(tmp_path) == ["intent.pool.yaml", "intent.yaml"]


def test_prompt_edited_during_the_run_writes_neither_file(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT)
    original = load_prompt(path)
    pending = plan_write(original, original.with_retrieval(POOL))
    path.write_text(PROMPT + "# my edit\n")
    with pytest.raises(WriteBackError, match="changed on disk"):
        apply_write(pending)
    assert files(tmp_path) == ["intent.yaml"]  # no pool file, no temporary file


@pytest.mark.parametrize("existing_pool", [False, True])
def test_failed_prompt_write_restores_the_pool_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    existing_pool: bool) -> None:
    # The disk refusing the second rename (full, yanked) cannot be staged for real here (root
    # ignores permissions), so os.replace fails for the prompt file only.
    retrieve = "retrieve:\n  pool: intent.pool.yaml\n" if existing_pool else ""
    path = write(tmp_path, "intent.yaml", PROMPT + retrieve)
    if existing_pool:
        write(tmp_path, "intent.pool.yaml", "- inputs: {text: a}\n  output: x\n")
    original = load_prompt(path)
    pending = plan_write(original, original.with_retrieval(POOL))
    real_replace = os.replace

    def replace(src: str, dst: str | Path) -> None:
        if Path(dst) == path:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        apply_write(pending)
    monkeypatch.undo()
    assert path.read_text() == PROMPT + retrieve
    if existing_pool:
        assert (tmp_path / "intent.pool.yaml").read_text() == "- inputs: {text: a}\n  output: x\n"
    assert files(tmp_path) == (["intent.pool.yaml", "intent.yaml"] if existing_pool else ["intent.yaml"])


def test_long_pool_diff_is_cut(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT)
    original = load_prompt(path)
    pool = tuple(Demo({"text": f"message number {i}"}, f"label_{i % 7}") for i in range(200))
    diff = plan_write(original, original.with_retrieval(pool)).diff()
    assert "+retrieve:" in diff
    assert diff.rstrip("\n").endswith("more diff lines of intent.pool.yaml")
    assert len(diff.splitlines()) < MAX_POOL_DIFF_LINES + 30


def test_text_prompt_refuses_to_write_a_retrieval_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "p.txt", "Classify: {text}")
    original = load_prompt(path)
    # with_retrieval refuses text prompts; a candidate built around it is refused at write time
    chat = load_prompt(write(tmp_path, "q.yaml", "messages:\n  - role: user\n    content: '{text}'\n"))
    sneaked = dataclasses.replace(original, retrieval=chat.with_retrieval(POOL).retrieval)
    with pytest.raises(WriteBackError, match="need a YAML chat prompt"):
        plan_write(original, sneaked)
    assert path.read_text() == "Classify: {text}"


def test_crlf_prompt_keeps_crlf_with_a_new_section(tmp_path: Path) -> None:
    path = tmp_path.resolve() / "intent.yaml"
    path.write_bytes(PROMPT.replace("\n", "\r\n").encode())
    original = load_prompt(path)
    apply_write(plan_write(original, original.with_retrieval(POOL, k=2)))
    data = path.read_bytes()
    assert b"retrieve:\r\n  k: 2\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")


def test_awkward_pool_texts_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT)
    original = load_prompt(path)
    pool = (Demo({"text": "line one\nline two: a colon, {braces} and # no comment"}, "out\nmulti"),
            Demo({"text": "quotes \" and ' and unicode ünï ☃ \t tab"}, "yes: no"),
            Demo({"text": "  leading and trailing spaces  "}, "- dash"))
    candidate = original.with_retrieval(pool, k=1)
    apply_write(plan_write(original, candidate))
    assert load_prompt(path).retrieval == candidate.retrieval
