"""Retrieved demos: BM25 ranking, the retrieval rule, loading and validation, rendering order."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_promptopt.errors import ConfigError, PromptFileError, PromptOptError
from pytest_promptopt.optimize.base import fingerprint
from pytest_promptopt.optimize.demos import DemoOption, pool_from_options, retrieval_pool
from pytest_promptopt.prompts.prompt import Demo, load_prompt
from pytest_promptopt.run.record import Call, CaseOutcome
from pytest_promptopt.prompts.retrieval import BM25, RetrievalRule, cosine, majority_last, ranked, tokenize

POOL = (
    Demo({"text": "my card has not arrived yet"}, "card_arrival"),
    Demo({"text": "how do I reset my PIN"}, "change_pin"),
    Demo({"text": "the card payment was declined at the shop"}, "declined_card_payment"),
    Demo({"text": "where is my new card, still waiting for the card"}, "card_arrival"),
    Demo({"text": "I forgot my PIN code"}, "change_pin"),
)

PROMPT = """\
# Intent classifier with retrieved demos.
temperature: 0
messages:
  - role: system
    content: "Classify into one of: {labels}."
  - role: user
    content: "{text}"
demos:
  - inputs: {text: "static example"}
    output: "static_label"
retrieve:
  k: 2
  by: bm25
  pool: intent.pool.yaml
"""

POOL_FILE = """\
# labelled cases
- inputs: {text: "my card has not arrived yet"}
  output: card_arrival
- inputs: {text: "how do I reset my PIN"}
  output: change_pin
- inputs: {text: "the card payment was declined at the shop"}
  output: declined_card_payment
- inputs: {text: "where is my new card, still waiting for the card"}
  output: card_arrival
- inputs: {text: "I forgot my PIN code"}
  output: change_pin
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path.resolve() / name
    path.write_text(text, encoding="utf-8")
    return path


def prompt_with_pool(tmp_path: Path, prompt: str = PROMPT, pool: str = POOL_FILE) -> Path:
    write(tmp_path, "intent.pool.yaml", pool)
    return write(tmp_path, "intent.yaml", prompt)


def load_error(path: Path) -> PromptFileError:
    with pytest.raises(PromptFileError) as info:
        load_prompt(path)
    return info.value


# -- BM25 ------------------------------------------------------------------------------------------


def test_tokenize_is_case_blind_and_drops_punctuation() -> None:
    assert tokenize("Where's my CARD? Ünïcode_ok 42") == ["where", "s", "my", "card", "ünïcode_ok", "42"]


def test_bm25_ranks_the_document_sharing_rare_terms_first() -> None:
    index = BM25([d.inputs["text"] for d in POOL])
    scores = index.scores("PIN reset please")
    assert max(range(len(POOL)), key=lambda i: scores[i]) == 1  # "how do I reset my PIN"
    assert scores[1] > scores[4] > 0  # both mention PIN; only 1 also says reset
    assert scores[0] == scores[2] == scores[3] == 0.0


def test_bm25_rare_term_outweighs_common_term() -> None:
    index = BM25(["card card card", "card declined", "card arrived", "card lost"])
    scores = index.scores("card declined")
    assert scores.index(max(scores)) == 1


def test_bm25_prefers_shorter_document_on_equal_term_frequency() -> None:
    index = BM25(["refund", "refund for the order I placed last week with a coupon", "other"])
    scores = index.scores("refund")
    assert scores[0] > scores[1] > 0


def test_bm25_scores_are_reproducible() -> None:
    texts = [d.inputs["text"] for d in POOL]
    assert BM25(texts).scores("card PIN declined waiting") == BM25(texts).scores("waiting declined PIN card")


def test_bm25_matches_the_textbook_formula() -> None:
    docs = ["the card did not arrive", "the the card", "PIN", "card PIN card PIN card", ""]
    query = "card PIN the missing"
    tokens = [d.casefold().split() for d in docs]
    avg = sum(map(len, tokens)) / len(tokens)
    expected = []
    for doc in tokens:
        total = 0.0
        for term in sorted(set(query.casefold().split())):
            n = sum(term in t for t in tokens)
            tf = doc.count(term)
            if n and tf:
                idf = math.log(1 + (len(docs) - n + 0.5) / (n + 0.5))
                total += idf * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * len(doc) / avg))
        expected.append(total)
    assert BM25(docs).scores(query) == pytest.approx(expected)
    assert BM25(docs).scores(query)[4] == 0.0 and BM25([]).scores(query) == []


def test_ranked_orders_positive_then_zero_then_negative_and_skips_excluded() -> None:
    scores = {0: 0.5, 2: 0.9, 3: -0.2, 5: 0.5, 6: 0.0, 7: -0.1}
    assert ranked(scores, 8, frozenset(), 8) == [2, 0, 5, 1, 4, 6, 7, 3]
    assert ranked(scores, 8, frozenset({2, 1}), 4) == [0, 5, 4, 6]
    assert ranked({}, 3, frozenset({0}), 5) == [1, 2]


def test_cosine() -> None:
    assert cosine([1.0, 0.0], [2.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [0.0, 3.0]) == pytest.approx(0.0)
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0


# -- the rule ----------------------------------------------------------------------------------------


def test_select_returns_k_nearest_with_the_most_similar_last() -> None:
    rule = RetrievalRule(POOL, k=2)
    chosen = rule.select({"text": "still waiting for my card"})
    assert [d.output for d in chosen] == ["card_arrival", "card_arrival"]
    assert chosen[-1] == POOL[3]  # shares "still", "waiting", "card" twice: the nearest, so last
    assert chosen[0] == POOL[0]


def test_select_nearest_first_order_reverses() -> None:
    last = RetrievalRule(POOL, k=3).select({"text": "forgot PIN card"})
    first = RetrievalRule(POOL, k=3, order="nearest_first").select({"text": "forgot PIN card"})
    assert first == tuple(reversed(last))
    assert first[0] == POOL[4]


def test_select_majority_last_puts_the_answer_most_demos_share_last() -> None:
    query = {"text": "reset PIN, card has not arrived"}
    nearest_last = RetrievalRule(POOL, k=3).select(query)
    assert nearest_last == (POOL[4], POOL[1], POOL[0])  # the nearest is a card_arrival case
    chosen = RetrievalRule(POOL, k=3, order="majority_last").select(query)
    assert chosen == (POOL[0], POOL[4], POOL[1])  # two of three say change_pin: they go last


def test_majority_last_breaks_ties_by_the_nearest_and_keeps_unique_answers_as_they_are() -> None:
    a, b, c, d = (Demo({"text": t}, o) for t, o in (("a", "x"), ("b", "y"), ("c", "x"), ("d", "z")))
    # x twice, y and z once: y and z tie, z holds the nearest demo (last), so z comes after y
    assert majority_last((a, b, c, d)) == (b, d, a, c)
    unique = tuple(Demo({"text": str(i)}, f"answer {i}") for i in range(4))
    assert majority_last(unique) == unique


def test_select_is_deterministic_and_breaks_ties_by_pool_order() -> None:
    pool = (Demo({"text": "alpha"}, "a1"), Demo({"text": "alpha"}, "a2"), Demo({"text": "alpha"}, "a3"),
            Demo({"text": "beta"}, "b"))
    rule = RetrievalRule(pool, k=2, order="nearest_first")
    runs = [rule.select({"text": "alpha please"}) for _ in range(5)]
    assert runs == [(pool[0], pool[1])] * 5  # equal scores: earlier pool entries first
    # no shared word at all: every score is 0, the first k entries in pool order
    assert rule.select({"text": "gamma"}) == (pool[0], pool[1])


def test_select_never_offers_the_input_itself() -> None:
    rule = RetrievalRule(POOL, k=1)
    own = POOL[1].inputs["text"]
    chosen = rule.select({"text": own, "labels": "unrelated constant"})
    assert chosen == (POOL[4],)  # the other PIN entry, not the case's own labelled answer
    assert POOL[1] not in RetrievalRule(POOL, k=5).select({"text": own})
    assert len(RetrievalRule(POOL, k=5).select({"text": own})) == 4


def test_select_compares_only_the_pool_input_names() -> None:
    rule = RetrievalRule(POOL, k=1)
    # the constant label list mentions every intent; it must not steer the choice
    chosen = rule.select({"text": "PIN reset", "labels": "card_arrival declined card card card"})
    assert chosen == (POOL[1],)


def test_embeddings_rank_by_cosine_with_one_batch_per_call() -> None:
    vectors = {"my card has not arrived yet": [1.0, 0.0], "how do I reset my PIN": [0.0, 1.0],
               "the card payment was declined at the shop": [0.7, 0.7],
               "where is my new card, still waiting for the card": [0.9, 0.1], "I forgot my PIN code": [0.1, 0.9],
               "query": [0.2, 1.0]}
    batches: list[list[str]] = []

    def embed(texts: object) -> list[list[float]]:
        batches.append(list(texts))  # type: ignore[call-overload]
        return [vectors[t] for t in batches[-1]]

    chosen = RetrievalRule(POOL, k=2, by="embeddings").select({"text": "query"}, embed)
    assert chosen == (POOL[1], POOL[4])  # cosine 0.981 then 0.996: the nearest last
    assert len(batches) == 1 and batches[0][-1] == "query" and len(batches[0]) == len(POOL) + 1


def test_identity_changes_with_k_order_and_pool() -> None:
    base = RetrievalRule(POOL, k=2)
    assert base.identity == RetrievalRule(POOL, k=2).identity
    others = [RetrievalRule(POOL, k=3), RetrievalRule(POOL, k=2, order="nearest_first"),
              RetrievalRule(POOL, k=2, order="majority_last"),
              RetrievalRule(POOL[:-1], k=2), RetrievalRule(POOL, k=2, by="embeddings")]
    assert len({base.identity, *(o.identity for o in others)}) == 6


# -- loading and validation --------------------------------------------------------------------------


def test_load_pool_from_sidecar(tmp_path: Path) -> None:
    prompt = load_prompt(prompt_with_pool(tmp_path))
    rule = prompt.retrieval
    assert rule is not None
    assert (rule.k, rule.by, rule.order, rule.pool_file) == (2, "bm25", "nearest_last", "intent.pool.yaml")
    assert rule.pool == POOL
    assert prompt.demos == (Demo({"text": "static example"}, "static_label"),)
    assert prompt.pool_digest and prompt.pool_digest != prompt.source_digest


def test_load_inline_pool_and_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "messages:\n  - role: user\n    content: '{text}'\n"
                 "retrieve:\n  pool:\n    - inputs: {text: a b}\n      output: x\n")
    prompt = load_prompt(path)
    assert prompt.retrieval == RetrievalRule((Demo({"text": "a b"}, "x"),), 4, "bm25", "nearest_last", None)
    assert prompt.pool_digest == ""


@pytest.mark.parametrize(
    ("retrieve", "field", "problem", "line"),
    [
        ("retrieve: 4\n", "retrieve", "retrieve must be a mapping", 5),
        ("retrieve:\n  k: 4\n  pool: p.pool.yaml\n  top: 3\n", "retrieve.top", "unknown field 'top'", 8),
        ("retrieve:\n  k: 0\n  pool: p.pool.yaml\n", "retrieve.k", "k must be a whole number from 1 to 64", 6),
        ("retrieve:\n  k: two\n  pool: p.pool.yaml\n", "retrieve.k", "got 'two'", 6),
        ("retrieve:\n  by: tfidf\n  pool: p.pool.yaml\n", "retrieve.by", "unknown similarity 'tfidf'", 6),
        ("retrieve:\n  order: random\n  pool: p.pool.yaml\n", "retrieve.order", "unknown order 'random'", 6),
        ("retrieve:\n  k: 2\n", "retrieve.pool", "must name a pool file or list the demos inline", 6),
        ("retrieve:\n  pool: missing.yaml\n", "retrieve.pool", "pool file 'missing.yaml' not found", 6),
        ("retrieve:\n  pool: ../p.pool.yaml\n", "retrieve.pool", "must be a .yaml/.yml file in the prompt's folder", 6),
        ("retrieve:\n  pool: p.pool.json\n", "retrieve.pool", "must be a .yaml/.yml file", 6),
        ("retrieve:\n  pool:\n    - inputs: {text: a}\n", "retrieve.pool[0]", "each demo must be", 7),
        ("retrieve:\n  pool:\n    - inputs: {txt: a}\n      output: x\n", "retrieve.pool[0]",
         "has input(s) ['txt'] that are not placeholders of the prompt", None),
        ("retrieve:\n  pool:\n    - output: x\n", "retrieve.pool[0]", "has no inputs", None),
        ("retrieve:\n  pool: []\n", "retrieve.pool", "the retrieval pool is empty", None),
    ],
)
def test_bad_retrieve_section(tmp_path: Path, retrieve: str, field: str, problem: str, line: int | None) -> None:
    write(tmp_path, "p.pool.yaml", "- inputs: {text: a}\n  output: x\n")
    path = write(tmp_path, "p.yaml", "messages:\n  - role: user\n    content: '{text}'\n" + "demos: []\n" + retrieve)
    err = load_error(path)
    assert err.path == path and err.field == field and err.line == line
    assert problem in str(err) and "fix:" in str(err)


@pytest.mark.parametrize(
    ("pool", "field", "problem", "line"),
    [
        ("{inputs: {text: a}, output: x}\n", "pool", "a pool file must be a non-empty list of demos", None),
        ("[]\n", "pool", "a pool file must be a non-empty list of demos", None),
        ("- inputs: {text: a}\n  output: x\n- inputs: {text: b}\n  result: y\n", "pool[1]", "each demo must be", 3),
        ("- inputs: {text: a\n", None, "invalid YAML", 1),  # where the { opened, not the end of the file
    ],
)
def test_bad_pool_file_names_the_pool_file(tmp_path: Path, pool: str, field: str | None, problem: str,
                                           line: int | None) -> None:
    path = prompt_with_pool(tmp_path, pool=pool)
    err = load_error(path)
    assert err.path == tmp_path.resolve() / "intent.pool.yaml"
    assert err.field == field and err.line == line and problem in str(err)


def test_pool_file_not_utf8(tmp_path: Path) -> None:
    path = prompt_with_pool(tmp_path)
    (tmp_path / "intent.pool.yaml").write_bytes(b"- inputs: {text: \xff}\n  output: x\n")
    err = load_error(path)
    assert err.path == tmp_path.resolve() / "intent.pool.yaml" and "not valid UTF-8" in str(err)


# -- rendering ------------------------------------------------------------------------------------------


def test_render_puts_static_demos_first_and_retrieved_demos_just_before_the_input(tmp_path: Path) -> None:
    prompt = load_prompt(prompt_with_pool(tmp_path))
    messages = prompt.render({"text": "still waiting for my card to arrive", "labels": "a, b"})
    assert messages == [
        {"role": "system", "content": "Classify into one of: a, b."},
        {"role": "user", "content": "static example"},
        {"role": "assistant", "content": "static_label"},
        {"role": "user", "content": "my card has not arrived yet"},
        {"role": "assistant", "content": "card_arrival"},
        {"role": "user", "content": "where is my new card, still waiting for the card"},
        {"role": "assistant", "content": "card_arrival"},
        {"role": "user", "content": "still waiting for my card to arrive"},
    ]


def test_render_keeps_a_shared_prefix_across_inputs(tmp_path: Path) -> None:
    prompt = load_prompt(prompt_with_pool(tmp_path))
    a = prompt.render({"text": "PIN forgotten", "labels": "a"})
    b = prompt.render({"text": "card declined", "labels": "a"})
    assert a[:3] == b[:3]  # system and static demo: identical
    assert a[3:] != b[3:]


def test_render_retrieved_after_a_later_user_context_turn(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml",
                 "messages:\n  - role: system\n    content: sys\n  - role: user\n    content: context\n"
                 "  - role: assistant\n    content: ok\n  - role: user\n    content: 'Q: {text}'\n"
                 "demos:\n  - inputs: {text: s}\n    output: S\n"
                 "retrieve:\n  k: 1\n  pool:\n    - inputs: {text: near}\n      output: N\n")
    roles_contents = [(m["role"], m["content"]) for m in load_prompt(path).render({"text": "near"})]
    # the only pool entry is the input itself: never shown
    assert ("user", "Q: near") in roles_contents and ("assistant", "N") not in roles_contents
    messages = load_prompt(path).render({"text": "very near"})
    assert [m["content"] for m in messages] == ["sys", "Q: s", "S", "context", "ok", "Q: near", "N", "Q: very near"]


def test_render_by_embeddings_without_a_model_names_the_setting(tmp_path: Path) -> None:
    path = prompt_with_pool(tmp_path, PROMPT.replace("by: bm25", "by: embeddings"))
    prompt = load_prompt(path)
    with pytest.raises(ConfigError, match="--promptopt-embedding-model") as info:
        prompt.render({"text": "x", "labels": "a"})
    assert str(path) in str(info.value) and "by: bm25" in str(info.value)


# -- the prompt API for the optimizer ------------------------------------------------------------------


def test_with_retrieval_and_without(tmp_path: Path) -> None:
    path = write(tmp_path, "intent.yaml", PROMPT.split("retrieve:")[0])
    prompt = load_prompt(path)
    assert prompt.retrieval is None
    candidate = prompt.with_retrieval(POOL, k=3)
    assert candidate.retrieval == RetrievalRule(POOL, 3, "bm25", "nearest_last", "intent.pool.yaml")
    assert prompt.retrieval is None  # immutable
    assert candidate.without_retrieval() == prompt
    ids = {fingerprint({"k": p}) for p in (prompt, candidate, prompt.with_retrieval(POOL, k=2),
                                           prompt.with_retrieval(POOL[:3], k=3),
                                           prompt.with_retrieval(POOL, k=3, order="nearest_first"))}
    assert len(ids) == 5
    assert fingerprint({"k": candidate}) == fingerprint({"k": prompt.with_retrieval(POOL, k=3)})


def test_with_retrieval_keeps_the_sidecar_name_or_inline_pool(tmp_path: Path) -> None:
    sidecar = load_prompt(prompt_with_pool(tmp_path))
    assert sidecar.with_retrieval(POOL[:2], k=1).retrieval.pool_file == "intent.pool.yaml"  # type: ignore[union-attr]
    inline = load_prompt(write(tmp_path, "p.yaml", "messages:\n  - role: user\n    content: '{text}'\n"
                               "retrieve:\n  pool:\n    - inputs: {text: a}\n      output: x\n"))
    assert inline.with_retrieval(POOL, k=1).retrieval.pool_file is None  # type: ignore[union-attr]
    assert inline.with_retrieval(POOL, pool_file="more.pool.yaml").retrieval.pool_file == "more.pool.yaml"  # type: ignore[union-attr]


def test_with_retrieval_validates(tmp_path: Path) -> None:
    prompt = load_prompt(prompt_with_pool(tmp_path))
    with pytest.raises(PromptFileError, match="not placeholders of the prompt"):
        prompt.with_retrieval((Demo({"question": "q"}, "a"),))
    with pytest.raises(PromptFileError, match="invalid retrieval rule"):
        prompt.with_retrieval(POOL, k=0)
    with pytest.raises(PromptFileError, match="invalid retrieval rule"):
        prompt.with_retrieval(POOL, by="tfidf")
    for outside in ("../elsewhere.pool.yaml", "/tmp/x.pool.yaml", "pool.txt"):
        with pytest.raises(PromptFileError, match="must be a .yaml/.yml file in the prompt's folder"):
            prompt.with_retrieval(POOL, pool_file=outside)


def test_text_prompts_refuse_retrieval(tmp_path: Path) -> None:
    prompt = load_prompt(write(tmp_path, "p.txt", "Classify: {text}"))
    assert not prompt.supports_retrieval
    with pytest.raises(PromptOptError, match="need a YAML chat prompt"):
        prompt.with_retrieval(POOL)


# -- the pool from train cases --------------------------------------------------------------------------


def _case(nodeid: str, split: str, text: str, output: str, passed: bool, expected: str | None = None) -> CaseOutcome:
    return CaseOutcome(nodeid, passed, 1.0 if passed else 0.0, "", (Call("k", {"text": text, "labels": "L"}, output, expected),))


def test_retrieval_pool_holds_train_cases_only() -> None:
    cases = [
        _case("t::a", "train", "card late", "card_arrival", True),
        _case("t::b", "train", "pin?", "wrong", False, expected="change_pin"),
        _case("t::c", "train", "no label", "wrong", False),
        _case("t::v", "validation", "validation text", "declined", True),
    ]
    pool = retrieval_pool("k", cases, {"t::a", "t::b", "t::c"})
    assert pool == (Demo({"text": "card late"}, "card_arrival"), Demo({"text": "pin?"}, "change_pin"))


def test_pool_from_options_filters_sources_and_duplicates() -> None:
    options = [DemoOption(Demo({"text": "a"}, "x"), "t::1", "bootstrapped"),
               DemoOption(Demo({"text": "b"}, "y"), "v::2", "labelled"),
               DemoOption(Demo({"text": "a"}, "z"), "t::3", "labelled")]
    assert pool_from_options(options, {"t::1", "t::3"}) == (Demo({"text": "a"}, "x"),)
