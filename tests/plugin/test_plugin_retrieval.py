"""Retrieved demos through real pytest runs against the scripted server.

The scripted model answers with the output of the last demo it was shown, so a test passes
exactly when the call got the pool entry nearest to its input as its last demo.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_promptopt.testing import ScriptedServer

PROMPT = """\
messages:
  - role: system
    content: "Classify into one of: {labels}."
  - role: user
    content: "{text}"
retrieve:
  k: 2
  by: BY
  pool: intent.pool.yaml
"""

POOL = """\
- inputs: {text: "my card has not arrived yet"}
  output: card_arrival
- inputs: {text: "reset my PIN please"}
  output: pin_own_answer
- inputs: {text: "how do I change the PIN"}
  output: change_pin
- inputs: {text: "the ATM kept my cash"}
  output: cash_withdrawal
- inputs: {text: "refund for a cancelled order"}
  output: refund
"""

TESTS = """\
import pytest
from pytest_promptopt import load_prompt

intent = load_prompt("intent.yaml")

CASES = [
    ("still waiting, my new card has not arrived", "card_arrival"),
    ("an ATM took my cash yesterday", "cash_withdrawal"),
    ("I want a refund for the order", "refund"),
    # the pool's own entry: never offered as its own demo, the next nearest answers
    ("reset my PIN please", "change_pin"),
]

@pytest.mark.parametrize("text,label", CASES)
def test_intent(llm, text, label):
    assert llm(intent, text=text, labels="many labels") == label
"""


def last_demo_output(messages: list[dict[str, str]], body: dict[str, Any]) -> str:
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    return answers[-1] if answers else "no demos"


def make_suite(suite: pytest.Pytester, by: str = "bm25", tests: str = TESTS) -> None:
    suite.makefile(".yaml", intent=PROMPT.replace("BY", by))
    (suite.path / "intent.pool.yaml").write_text(POOL)
    suite.makepyfile(test_intent=tests)


def test_each_input_gets_its_nearest_pool_entries_and_reruns_hit_the_cache(
        suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    scripted.responder = last_demo_output
    make_suite(suite)
    result = suite.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert scripted.count == 4
    for request in scripted.requests:
        roles = [m["role"] for m in request["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user"]  # k = 2 demos, input last
    own = next(r for r in scripted.requests if r["messages"][-1]["content"] == "reset my PIN please")
    assert "pin_own_answer" not in [m["content"] for m in own["messages"]]
    again = suite.runpytest("-p", "no:randomly")
    again.assert_outcomes(passed=4)
    assert scripted.count == 4  # the same demos, so the same requests: all from the cache
    replay = suite.runpytest("-p", "no:randomly", "--promptopt-record=replay")
    replay.assert_outcomes(passed=4)


def test_a_broken_pool_file_fails_collection_naming_the_file(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    make_suite(suite)
    (suite.path / "intent.pool.yaml").write_text("- inputs: {text: a}\n  answer: x\n")
    result = suite.runpytest()
    assert result.ret != 0
    assert "intent.pool.yaml:1 (field 'pool[0]'): each demo must be {inputs: {name: value}, output: text}" \
        in result.stdout.str()
    assert scripted.count == 0


# Concept vectors: no pool entry shares a word with the inputs below, so BM25 would give every
# input the same first entries; only the embeddings can find the right one.
CONCEPTS = {"card": 0, "plastic": 0, "arrived": 0, "delivered": 0, "pin": 1, "secret": 1, "number": 1,
            "atm": 2, "cash": 2, "money": 2, "machine": 2, "refund": 3, "reimbursed": 3}


def concept_vectors(texts: list[str]) -> list[list[float]]:
    vectors = []
    for text in texts:
        vector = [0.01, 0.01, 0.01, 0.01]
        for word in text.casefold().replace(",", " ").split():
            if word in CONCEPTS:
                vector[CONCEPTS[word]] += 1.0
        vectors.append(vector)
    return vectors


EMBEDDING_TESTS = """\
import pytest
from pytest_promptopt import load_prompt

intent = load_prompt("intent.yaml")

@pytest.mark.parametrize("text,label", [
    ("was the plastic delivered", "card_arrival"),
    ("the machine swallowed money", "cash_withdrawal"),
    ("can I get reimbursed", "refund"),
])
def test_intent(llm, text, label):
    assert llm(intent, text=text, labels="many labels") == label
"""


def run_with_concept_vectors(suite: pytest.Pytester, scripted: ScriptedServer, tests: str) -> pytest.RunResult:
    """The suite by embeddings, the scripted model answering its last demo, `toy-embed` configured."""
    scripted.responder = last_demo_output
    scripted.embedder = concept_vectors
    make_suite(suite, "embeddings", tests)
    return suite.runpytest("-p", "no:randomly", "--promptopt-embedding-model", "toy-embed")


def test_embeddings_rank_by_the_endpoint_vectors_and_are_cached(
        suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    run_with_concept_vectors(suite, scripted, EMBEDDING_TESTS).assert_outcomes(passed=3)
    embedded = [t for r in scripted.embedding_requests for t in r["input"]]
    assert sorted(embedded) == sorted([*(line.split('"')[1] for line in POOL.splitlines() if "text:" in line),
                                       "was the plastic delivered", "the machine swallowed money",
                                       "can I get reimbursed"])  # every text once
    assert {r["model"] for r in scripted.embedding_requests} == {"toy-embed"}
    sent = len(scripted.embedding_requests)
    again = suite.runpytest("-p", "no:randomly", "--promptopt-embedding-model", "toy-embed")
    again.assert_outcomes(passed=3)
    assert len(scripted.embedding_requests) == sent and scripted.count == 3  # vectors and replies cached


def test_embeddings_without_a_model_fail_naming_the_setting(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    make_suite(suite, "embeddings", EMBEDDING_TESTS)
    result = suite.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*retrieve.by is 'embeddings' but no embedding model is set; set "
                                 "--promptopt-embedding-model*"])
    assert scripted.count == 0 and scripted.embedding_requests == []


RETRIEVED_DEMOS_TESTS = """\
import pytest
from pytest_promptopt import load_prompt

intent = load_prompt("intent.yaml")

@pytest.mark.parametrize("text,label", [
    ("was the plastic delivered", "card_arrival"),
    ("the machine swallowed money", "cash_withdrawal"),
])
def test_retrieved_demos_are_the_ones_llm_sends(llm, text, label):
    demos = intent.retrieved_demos({"text": text, "labels": "many labels"})
    assert [d.output for d in demos][-1] == label
    assert llm(intent, text=text, labels="many labels") == label  # the scripted model answers the last demo
    sent = [m["content"] for m in llm.traces[-1].messages if m["role"] == "assistant"]
    assert sent == [d.output for d in demos]
"""


def test_retrieved_demos_in_a_test_use_the_configured_embedding_model(
        suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    run_with_concept_vectors(suite, scripted, RETRIEVED_DEMOS_TESTS).assert_outcomes(passed=2)
    assert {r["model"] for r in scripted.embedding_requests} == {"toy-embed"}
    assert scripted.count == 2


def test_retrieved_demos_without_an_embedding_model_name_what_to_set(
        suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    make_suite(suite, "embeddings", RETRIEVED_DEMOS_TESTS)
    result = suite.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([("*intent.yaml: retrieve.by is 'embeddings' but no embedding model is set; set "
                                  "--promptopt-embedding-model (ini promptopt_embedding_model, environment "
                                  "PROMPTOPT_EMBEDDING_MODEL) or write 'by: bm25'*")])
    assert scripted.count == 0 and scripted.embedding_requests == []


def test_optimize_keeps_the_retrieve_section_and_the_pool_file(suite: pytest.Pytester, scripted: ScriptedServer) -> None:
    from wordtask import WORD_PROMPT, WORD_TESTS, WORDS, reverse_when_told

    scripted.responder = reverse_when_told()
    prompt = WORD_PROMPT + "retrieve:\n  k: 1   # one neighbour\n  pool: word.pool.yaml\n"
    pool = "# hand-labelled\n- inputs: {word: zulu}\n  output: uluz\n- inputs: {word: yankee}\n  output: eeknay\n"
    (suite.path / "word.yaml").write_text(prompt)
    (suite.path / "word.pool.yaml").write_text(pool)
    suite.makepyfile(test_word=WORD_TESTS)
    result = suite.runpytest("--optimize", "--optimize-strategy=gradsum")
    result.stdout.fnmatch_lines(["*accepted: validation 0.000 -> 1.000*"])
    text = (suite.path / "word.yaml").read_text()
    assert "Reverse the word letter by letter." in text
    assert text.endswith("retrieve:\n  k: 1   # one neighbour\n  pool: word.pool.yaml\n")
    assert (suite.path / "word.pool.yaml").read_text() == pool
    requests = len(scripted.requests)
    again = suite.runpytest()
    again.assert_outcomes(passed=len(WORDS))
    assert all(len(r["messages"]) == 4 for r in scripted.requests[requests:])  # system, 1 demo pair, input


@pytest.mark.parametrize("source", ["ini", "env"])
def test_embedding_model_from_ini_or_environment(suite: pytest.Pytester, scripted: ScriptedServer,
                                                 monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    scripted.responder = last_demo_output
    scripted.embedder = concept_vectors
    make_suite(suite, "embeddings", EMBEDDING_TESTS)
    if source == "ini":
        ini = (suite.path / "tox.ini").read_text()
        (suite.path / "tox.ini").write_text(ini.rstrip("\n") + "\npromptopt_embedding_model = from-ini\n")
    else:
        monkeypatch.setenv("PROMPTOPT_EMBEDDING_MODEL", "from-env")
    result = suite.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert {r["model"] for r in scripted.embedding_requests} == {f"from-{source}"}
