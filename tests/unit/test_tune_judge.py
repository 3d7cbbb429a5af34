"""Tuning a judge: the three-way split and the objective (never raw agreement)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_promptopt.errors import PromptFileError, WriteBackError
from pytest_promptopt.optimize.judges import objective_of, split_three
from pytest_promptopt.prompts.judgefile import load_judge
from pytest_promptopt.prompts.writeback import apply_write, plan_judge_write


def test_the_split_is_three_way_within_each_class_and_the_same_every_time() -> None:
    keys = [f"case {i}" for i in range(100)]
    truth = [i < 30 for i in range(100)]  # 30 pass, 70 fail
    parts = split_three(keys, truth)
    # each class dealt train, train, validation, holdout: 30 -> 16/7/7, 70 -> 36/17/17
    assert {k: len(v) for k, v in parts.items()} == {"train": 52, "validation": 24, "holdout": 24}
    assert sorted(parts["train"] + parts["validation"] + parts["holdout"]) == list(range(100))
    assert sum(truth[i] for i in parts["holdout"]) == 7
    assert split_three(list(reversed(keys)), list(reversed(truth)))["holdout"] == \
        sorted(99 - i for i in parts["holdout"])  # by digest, not by position


def test_a_judge_that_says_the_majority_label_scores_nothing() -> None:
    truth = [True] * 9 + [False]
    always_pass = [True] * 10  # 90% raw agreement
    assert objective_of("kappa", truth, always_pass) == 0.0
    assert objective_of("balanced_accuracy", truth, always_pass) == pytest.approx(0.5)
    assert objective_of("kappa", truth, truth) == pytest.approx(1.0)


def test_the_judge_write_back_replaces_only_the_criteria_and_refuses_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("# keep me\ncriteria: |\n  Is polite.\n  Really.\nthreshold: 0.5  # and me\n")
    judge = load_judge(path)
    pending = plan_judge_write(judge, "Greets and thanks.\nNever blames.\n")
    apply_write(pending)
    assert path.read_text() == "# keep me\ncriteria: |\n  Greets and thanks.\n  Never blames.\nthreshold: 0.5  # and me\n"
    judge = load_judge(path)
    assert judge.criteria == "Greets and thanks.\nNever blames.\n"
    path.write_text(path.read_text() + "# edited by hand\n")
    with pytest.raises(WriteBackError, match="changed on disk"):
        plan_judge_write(judge, "Other.")  # loaded before the hand edit


def test_too_few_labels_to_split_three_ways_name_the_labels_file(tmp_path: Path) -> None:
    from pytest_promptopt.optimize.judges import JudgeSearch, JudgeTuner
    from pytest_promptopt.run.config import ROLES, RoleConfig, Settings
    from pytest_promptopt.run.runtime import Runtime

    (tmp_path / "j.labels.jsonl").write_text('{"output": "a", "verdict": "pass"}\n{"output": "b", "verdict": "fail"}\n')
    (tmp_path / "j.yaml").write_text("criteria: is polite\nlabels: j.labels.jsonl\n")
    roles = {role: RoleConfig(role, "http://127.0.0.1:9/v1", "m") for role in ROLES}  # never called: it stops first
    runtime = Runtime(Settings(roles, cache_dir=tmp_path / "cache"), tmp_path)
    try:
        tuner = JudgeTuner(runtime.judges, runtime.client("optimizer"), objective="kappa", search=JudgeSearch(),
                           mode=runtime.judge_mode)
        with pytest.raises(PromptFileError, match="too few labels to split three ways: 1 pass and 1 fail") as info:
            tuner.tune(load_judge(tmp_path / "j.yaml"))
        assert info.value.path == tmp_path / "j.labels.jsonl"
    finally:
        runtime.close()


def test_demo_sets_are_balanced_train_cases_with_the_judges_mistakes_first() -> None:
    from pytest_promptopt.optimize.judges import demo_sets
    from pytest_promptopt.prompts.labels import LabelledCase

    cases = [LabelledCase(i, f"case {i}", 1.0 if i % 2 == 0 else 0.0) for i in range(20)]
    truth = [c.score == 1.0 for c in cases]
    train, wrong = list(range(10)), [3, 4]
    sets = demo_sets(cases, truth, train, wrong, 3, 2)
    assert len(sets) == 3 and len(set(sets)) == 3
    for chosen in sets:
        assert set(chosen) <= set(train) and [truth[i] for i in chosen] == [True, False, True, False]
        assert {3, 4} <= set(chosen)  # each judge mistake of a class comes before the others of that class
    assert demo_sets(cases, truth, train, wrong, 3, 2) == sets  # the same labels, the same sets


def test_judge_demos_are_written_back_minimally_and_reload_to_the_same_judge(tmp_path: Path) -> None:
    from pytest_promptopt.prompts.labels import LabelledCase
    from pytest_promptopt.run.judge import request_messages

    path = tmp_path / "j.yaml"
    original = "# keep me\ncriteria: Is polite.  # and me\nthreshold: 0.5\n"
    path.write_text(original)
    judge = load_judge(path)
    demos = (LabelledCase(3, 'Sure: "done".\nAnything else?', 1.0, note="answers"),
             LabelledCase(7, "Read the FAQ.", 0.0, expected="a refund", inputs={"q": "refund?"}))
    apply_write(plan_judge_write(judge, judge.criteria, demos))
    text = path.read_text()
    assert text.startswith(original) and "demos:" in text[len(original):]
    again = load_judge(path)
    assert [d.to_dict() for d in again.demos] == [d.to_dict() for d in demos] and again.criteria == judge.criteria
    messages = request_messages("yesno", "Hello", again.criteria, None, None, again.demos)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [messages[2]["content"], messages[4]["content"]] == ["yes", "no"] and "a refund" in messages[3]["content"]
    apply_write(plan_judge_write(again, again.criteria, ()))  # a tuned set may also take demos away
    assert load_judge(path).demos == ()


def test_a_tuned_template_and_retrieval_are_written_back_minimally_and_reload(tmp_path: Path) -> None:
    from pytest_promptopt.run.judge import ANSWER_FORMAT, DATA_NOT_INSTRUCTIONS, guarded_system

    (tmp_path / "j.labels.jsonl").write_text('{"output": "a", "verdict": "pass"}\n')
    path = tmp_path / "j.yaml"
    original = "# keep me\ncriteria: Is polite.  # and me\nlabels: j.labels.jsonl\n"
    path.write_text(original)
    judge = load_judge(path)
    system = guarded_system("yesno", "Read the whole reply.\nThen decide.")
    assert system.startswith("Read the whole reply.") and DATA_NOT_INSTRUCTIONS in system \
        and ANSWER_FORMAT["yesno"] in system  # a rewrite cannot drop the guard or the answer format
    pending = plan_judge_write(judge, judge.criteria, system=system, retrieve_k=4)
    apply_write(pending)
    text = path.read_text()
    assert text.startswith(original) and "\nretrieve: {k: 4}\n" in text, text  # added, nothing else touched
    again = load_judge(path)
    assert (again.system, again.retrieve_k, again.criteria) == (system, 4, "Is polite.")
    apply_write(plan_judge_write(again, "Is kind.", retrieve_k=8))  # replaced in place
    third = load_judge(path)
    assert (third.criteria, third.retrieve_k, third.system) == ("Is kind.", 8, system)
    apply_write(plan_judge_write(third, third.criteria, retrieve_k=0))  # and removed
    assert load_judge(path).retrieve_k == 0 and "retrieve" not in path.read_text()


@pytest.mark.parametrize(("retrieve", "field", "problem"), [
    ("{k: 0}", "retrieve.k", "from 1 to 64, got 0"),
    ("{k: 4, by: embeddings}", "retrieve.by", "a judge retrieves by bm25"),
    ("{k: 4, pool: x.yaml}", "retrieve.pool", "unknown field 'pool'"),
    ("4", "retrieve", "must be a mapping"),
])
def test_a_bad_retrieve_in_a_judge_file_names_the_field_and_the_fix(tmp_path: Path, retrieve: str, field: str,
                                                                      problem: str) -> None:
    (tmp_path / "j.labels.jsonl").write_text('{"output": "a", "verdict": "pass"}\n')
    path = tmp_path / "j.yaml"
    path.write_text(f"criteria: Is polite.\nlabels: j.labels.jsonl\nretrieve: {retrieve}\n")
    with pytest.raises(PromptFileError, match=problem) as info:
        load_judge(path)
    assert info.value.field == field and "retrieve: {k: 4}" in str(info.value)


def test_retrieve_needs_the_judges_labels(tmp_path: Path) -> None:
    path = tmp_path / "j.yaml"
    path.write_text("criteria: Is polite.\nretrieve: {k: 2}\n")
    with pytest.raises(PromptFileError, match="has none") as info:
        load_judge(path)
    assert "add labels: j.labels.jsonl" in str(info.value)


def test_the_judge_pool_gives_the_nearest_labels_nearest_last_never_the_case_itself() -> None:
    from pytest_promptopt.prompts.judge_pool import JudgePool
    from pytest_promptopt.prompts.labels import LabelledCase

    cases = tuple(LabelledCase(i, f"reply about {topic} number {i}", float(i % 2))
                  for i, topic in enumerate(["refunds", "cards", "refunds", "pins", "refunds late", "cards"]))
    pool = JudgePool(cases)
    nearest = pool.nearest("reply about refunds number 0", None, 2)
    assert cases[0] not in nearest  # a labelled case never grades itself with its own label shown
    assert [c.line for c in nearest] == [4, 2]  # both refund cases; the nearer one last
    assert pool.nearest("reply about refunds number 0", None, 2) == nearest  # the same every time
    assert pool.nearest("anything", None, 0) == ()


def test_a_seed_draws_other_demo_sets_and_seed_0_keeps_the_old_ones() -> None:
    from pytest_promptopt.optimize.judges import demo_sets
    from pytest_promptopt.prompts.labels import LabelledCase

    cases = [LabelledCase(i, f"case {i}", 1.0 if i % 2 == 0 else 0.0) for i in range(40)]
    truth = [c.score == 1.0 for c in cases]
    train = list(range(30))
    assert demo_sets(cases, truth, train, [], 3, 2) == demo_sets(cases, truth, train, [], 3, 2, seed=0)
    assert demo_sets(cases, truth, train, [], 3, 2, seed=1) != demo_sets(cases, truth, train, [], 3, 2, seed=0)


def test_cases_the_judge_sees_alike_land_in_one_part_so_no_held_out_twin_is_shown() -> None:
    keys = [f"case {i // 2}" for i in range(80)]  # each text twice (two lines differing in inputs only)
    truth = [(i // 2) % 2 == 0 for i in range(80)]
    parts = split_three(keys, truth)
    where = {i: name for name, indexes in parts.items() for i in indexes}
    assert all(where[i] == where[i + 1] for i in range(0, 80, 2))
    assert {k: len(v) for k, v in parts.items()} == {"train": 40, "validation": 20, "holdout": 20}


def test_a_merged_verdict_goes_to_the_longest_matching_judge_file() -> None:
    from pytest_promptopt.report.shard_reader import _judge_rerooted

    names = ["polite.yaml", "tests/polite.yaml"]
    assert _judge_rerooted("/ci/run/tests/polite.yaml", names, Path("/here")) == "/here/tests/polite.yaml"
    assert _judge_rerooted("/ci/run/polite.yaml", names, Path("/here")) == "/here/polite.yaml"
    assert _judge_rerooted("<inline>", names, Path("/here")) == "<inline>"
