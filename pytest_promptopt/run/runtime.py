"""The per-session core: LM clients for each role, the cache, and candidate overrides.

The `llm` and `judge` fixtures are thin wrappers over `LLM` and `JudgeCall` here. The
optimizer swaps a candidate prompt in with `Runtime.override` and re-runs test items; the
`llm` callable always renders the prompt that is currently active for that file.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..llm import local
from ..llm.cache import ChatRequest, Reply
from ..llm.probe import Probe
from ..llm.shared_cache import open_cache
from .calllog import JUDGE
from .calllog import LLM as LLM_CALL
from ..llm.client import Budget, Completion, Endpoint, LMClient
from .config import ROLES, Settings
from ..defaults import EMBEDDED_MODEL, PAIRWISE_BOTH_ORDERS
from ..llm.embeddings import EmbeddingClient
from ..errors import CacheMissError, EndpointError, PromptOptError
from .judge import INLINE_JUDGE, JudgeFailed, combine, grade, request_messages, request_params
from ..prompts.judge_pool import JudgePool
from ..prompts.judgefile import Judge
from ..prompts.labels import LabelledCase
from ..prompts.prompt import Prompt, caller_folder, load_prompt
from ..prompts.retrieval import release_session_embedder, use_session_embedder
from .judges import JudgeBook
from .panel import append_review, panel_verdict, review_reason
from .pairwise import PAIR_PARAMS, PairVerdict, pair_messages, pair_verdict, read_position
from .record import JUDGE_KEY, TestRecord, Trace, Verdict
from ..usage import Usage

EmbeddedStarter = Callable[[], str]  # returns the embedded server's base URL
EmbeddedIdentity = Callable[[], str]  # the embedded model's identity for the cache key


def _complete(client: LMClient, request: ChatRequest, record: TestRecord, key: str, what: str) -> Completion:
    """One LM call of a test; a failed call is recorded against `key`, so the case is reported
    as not scored rather than as a plain failure."""
    try:
        return client.complete(request)
    except CacheMissError as exc:
        error = CacheMissError(f"{exc} (test {record.nodeid}, {what})")
        record.errors.append((key, str(error)))
        raise error from None
    except EndpointError as exc:
        record.errors.append((key, str(exc)))
        raise


def _at_the_callers_line(exc: PromptOptError) -> PromptOptError:
    """The error without the plugin's frames below the caller: pytest then shows it at the test's
    own line, as an assert (and checks.*) fail there. Its message names the file and the fix."""
    return exc.with_traceback(None)


def _own_model(judge: Judge | None) -> str | None:
    """A judge file's model (a panel's first member); None: the judge endpoint's model."""
    if judge is None:
        return None
    return judge.models[0] if judge.models else judge.model


class Runtime:
    def __init__(self, settings: Settings, root: Path, start_embedded: EmbeddedStarter | None = None,
                 embedded_identity: EmbeddedIdentity = local.embedded_identity) -> None:
        self.settings = settings
        self._embedded_identity = embedded_identity
        self.root = root
        self.cache = open_cache(settings.cache_dir, settings.record_mode, settings.shared_cache)
        self._start_embedded = start_embedded
        self._embedded_url: str | None = None
        self._clients: dict[str, LMClient] = {}
        self._lock = threading.Lock()
        self._overrides: dict[str, Prompt] = {}
        self._embedder: EmbeddingClient | None = None
        self.prompts: dict[str, Prompt] = {}  # every prompt file seen, as loaded from disk
        self._resolved_root: Path | None = None
        self.judges = JudgeBook(self)  # judge files: identity, trust in this run, calibration
        use_session_embedder(self.embedder)  # prompt.retrieved_demos() in a test: this run's model

    # -- endpoints -------------------------------------------------------------------------
    def embedded_url(self) -> str:
        with self._lock:
            if self._embedded_url is None:
                if self._start_embedded is None:
                    raise PromptOptError("no LM endpoint is configured and the embedded model is not available")
                self._embedded_url = self._start_embedded()
            return self._embedded_url

    def client(self, role: str) -> LMClient:
        existing = self._clients.get(role)
        if existing is not None:
            return existing
        rc = self.settings.role(role)
        if rc.embedded:
            # The embedded server is only started when a call is not served by the cache.
            # It answers whatever model name is asked for: its own identity goes into the key.
            endpoint = Endpoint("", rc.model or EMBEDDED_MODEL, "", role, self._embedded_identity())
        else:
            assert rc.base_url is not None
            endpoint = Endpoint(rc.base_url, rc.model or "", rc.api_key, role)
        client = LMClient(
            endpoint,
            self.cache,
            timeout=self.settings.timeout,
            max_retries=self.settings.retries,
            concurrency=self.settings.concurrency_for(role),
            price=self.settings.prices.get(endpoint.model),  # the endpoint's model: what Settings.price_of reads
            resolve_base_url=self.embedded_url if rc.embedded else None,
        )
        with self._lock:
            return self._clients.setdefault(role, client)

    def clients(self) -> Mapping[str, LMClient]:
        return dict(self._clients)

    def usage(self) -> dict[str, Usage]:
        """What each role's client has spent so far in this session."""
        return {role: self.client(role).usage() for role in ROLES}

    def budget_exhausted(self) -> bool:
        return any(c.budget is not None and c.budget.exhausted for c in self._clients.values())

    def budgeted(self, budget: Budget) -> contextlib.AbstractContextManager[None]:
        """Every role's calls count against `budget` (and stop at its caps) inside the block."""
        return self._on_every_client("budget", budget)

    def probing(self, probe: Probe) -> contextlib.AbstractContextManager[None]:
        """Every role's calls are answered from the cache or stop the test inside the block (see probe.py)."""
        return self._on_every_client("probe", probe)

    @contextlib.contextmanager
    def _on_every_client(self, attribute: str, value: object) -> Iterator[None]:
        """Set `attribute` on every role's client inside the block, and back to None after it."""
        clients = [self.client(role) for role in ROLES]
        for client in clients:
            setattr(client, attribute, value)
        try:
            yield
        finally:
            for client in clients:
                setattr(client, attribute, None)

    def task_request(self, prompt: Prompt, variables: Mapping[str, Any], sample: int = 0) -> tuple[LMClient, ChatRequest]:
        """The request `llm(prompt, **variables)` sends, with any candidate override applied."""
        active = self.active(prompt)
        client = self.client("task")
        model = client.endpoint.model if active.uses_model_default else str(active.model)
        messages = active.render(variables, embed=self.embedder())
        return client, client.request(messages, active.sampling(), model=model, sample=sample)

    def embedder(self) -> EmbeddingClient | None:
        """The task endpoint's embeddings, when an embedding model is set (retrieve by: embeddings)."""
        model = self.settings.embedding_model
        if not model:
            return None
        with self._lock:
            if self._embedder is None:
                rc = self.settings.role("task")
                base_url = self.embedded_url if rc.embedded else (lambda: str(rc.base_url))
                self._embedder = EmbeddingClient(base_url, model, self.cache, api_key=rc.api_key,
                                                 timeout=self.settings.timeout, retries=self.settings.retries)
            return self._embedder

    def prompt_name(self, prompt: Prompt) -> str:
        """How the call log names a prompt file: relative to the rootdir when under it (the
        log stays valid when the checkout moves), else absolute."""
        return self.file_name(prompt.path)  # prompt paths are resolved when loaded

    def file_name(self, path: Path) -> str:
        """A file as the call log names it (prompt and judge files alike)."""
        if self._resolved_root is None:
            self._resolved_root = self.root.resolve()
        try:
            return path.relative_to(self._resolved_root).as_posix()
        except ValueError:
            return str(path)

    # -- judges ----------------------------------------------------------------------------
    def judge_mode(self, judge: Judge | None) -> str:
        """'score', 'yesno' or 'geval': the judge file's own mode, else the setting's."""
        return judge.mode if judge is not None and judge.mode else self.settings.effective_judge_mode

    def judge_request(self, judge: Judge | None, output: str, criteria: str, expected: str | None,
                      sample: int = 0, member: str | None = None,
                      pool: JudgePool | None = None) -> tuple[LMClient, ChatRequest]:
        """The request a judge call sends (a test's, one sent ahead, or a calibration case's);
        `member` names a panel's model (default: the panel's first, which is what is sent ahead).
        A judge that retrieves is shown its demos, then the labelled cases of `pool` (default: its
        own labelled set) nearest this output."""
        mode = self.judge_mode(judge)
        client = self.client("judge")
        system = judge.system if judge is not None else None
        shown: tuple[LabelledCase, ...] = ()
        if judge is not None:
            retrieved = (pool or self.judges.pool(judge)).nearest(output, expected, judge.retrieve_k) \
                if judge.retrieve_k else ()
            shown = judge.demos + retrieved
        messages = request_messages(mode, output, criteria, expected, system, shown)
        model = member or _own_model(judge)
        return client, client.request(messages, request_params(mode), model=model, sample=sample)

    # -- prompts and overrides -------------------------------------------------------------
    def register(self, prompt: Prompt) -> None:
        self.prompts.setdefault(prompt.key, prompt)

    def active(self, prompt: Prompt) -> Prompt:
        return self._overrides.get(prompt.key, prompt)

    @contextlib.contextmanager
    def override(self, candidates: Mapping[str, Prompt]) -> Iterator[None]:
        previous = dict(self._overrides)
        self._overrides.update(candidates)
        try:
            yield
        finally:
            self._overrides = previous

    def close(self) -> None:
        release_session_embedder(self.embedder)
        for client in self._clients.values():
            client.close()
        if self._embedder is not None:
            self._embedder.close()
        self.cache.close()


class LLM:
    """`llm(prompt, **variables) -> str`: render, call (through the cache), trace."""

    def __init__(self, runtime: Runtime, record: TestRecord) -> None:
        self._runtime = runtime
        self._record = record

    def __repr__(self) -> str:  # shown in pytest's `where` lines: no address, the same on every run
        return "llm"

    @property
    def traces(self) -> list[Trace]:
        return self._record.traces

    def load(self, path: str | Path, near: Path | None = None) -> Prompt:
        """A relative path: next to the calling file, then under the rootdir (as load_prompt)."""
        return load_prompt(path, root=self._runtime.root, near=near)

    def __call__(self, prompt: Prompt | str | Path, /, **variables: Any) -> str:
        __tracebackhide__ = True  # a replay miss, a template error, a failed call: at the test's llm(...) line
        try:
            if not isinstance(prompt, Prompt):
                prompt = self.load(prompt, near=caller_folder(1))
            self._runtime.register(prompt)
            self._record.ask(prompt.key)
            client, request = self._runtime.task_request(prompt, variables, self._record.draw)
            messages = request.message_dicts
            model = request.model
            log = self._record.call_log
            index = log.begin(LLM_CALL, self._runtime.prompt_name(prompt), variables, sample=self._record.draw)
            completion = _complete(client, request, self._record, prompt.key, f"prompt {prompt.path}")
        except PromptOptError as exc:
            raise _at_the_callers_line(exc) from None
        log.done(index, completion.text)
        self._record.traces.append(Trace.of(prompt.key, variables, tuple(messages), model, completion))
        return completion.text


class JudgeCall:
    """`judge(output, criteria_or_judge, expected=None, threshold=None) -> Verdict`; fails the
    test below the threshold. The second argument is inline criteria or a `Judge` from a file."""

    def __init__(self, runtime: Runtime, record: TestRecord, threshold: float | None = None) -> None:
        self._runtime = runtime
        self._record = record
        self.default_threshold = threshold if threshold is not None else runtime.settings.judge_threshold

    def __repr__(self) -> str:
        return "judge"

    @property
    def mode(self) -> str:
        """'score' or 'yesno', from the judge_mode setting (auto: yesno for the embedded judge)."""
        return self._runtime.settings.effective_judge_mode

    def _ask(self, judge: Judge | None, output: str, criteria: str, expected: str | None, sample: int,
             member: str | None = None) -> Reply:
        client, request = self._runtime.judge_request(judge, output, criteria, expected, sample, member)
        completion = _complete(client, request, self._record, JUDGE_KEY, "judge call")
        self._record.judge_traces.append(Trace.of(JUDGE_KEY, {}, tuple(request.message_dicts), request.model, completion))
        return completion.reply

    def _sample(self, judge: Judge | None, output: str, text: str, expected: str | None, limit: float,
                sample: int) -> Verdict:
        """One draw of the judge (its own cache entry), logged so the next run can send it ahead."""
        mode = self._runtime.judge_mode(judge)
        if isinstance(output, str) and isinstance(text, str) and 0 <= limit <= 1:  # else no call is made
            inputs = {"output": output, "criteria": text} | ({} if expected is None else {"expected": expected})
            name = "" if judge is None else self._runtime.file_name(judge.path)
            self._record.call_log.begin(JUDGE, name, inputs, sample=sample, mode=mode)
        if judge is None or not judge.is_panel:
            return grade(lambda messages: self._ask(judge, output, text, expected, sample), output, text,
                         expected=expected, threshold=limit, mode=mode)
        members = [(model, grade(lambda messages, m=model: self._ask(judge, output, text, expected, sample, m),
                                 output, text, expected=expected, threshold=limit, mode=mode))
                   for model in judge.models]
        verdict = panel_verdict(members, judge.panel, limit, text)
        reason = review_reason(verdict)
        if reason is not None:
            append_review(judge.review_path, output, expected, reason)
        return verdict

    def grade(self, output: str, criteria: str | Judge, *, expected: str | None = None,
              threshold: float | None = None) -> Verdict:
        """Grade without failing the test; the verdict still counts toward the score.

        With --promptopt-judge-samples k the judge is asked k times (each draw cached apart) and
        the median-low verdict wins (a strict majority passes); with --promptopt-judge-confirm-fails
        only a failing first verdict is asked again."""
        judge = criteria if isinstance(criteria, Judge) else None
        text = judge.criteria if judge is not None else criteria
        own = judge.threshold if judge is not None else None
        limit = threshold if threshold is not None else own if own is not None else self.default_threshold
        k, confirm = self._runtime.settings.judge_draws, self._runtime.settings.judge_confirm_fails
        first = self._record.draw * k  # draws of repeats=n and of the judge never share a cache entry
        __tracebackhide__ = True  # a reply without a score, a failed call: at the test's judge(...) line
        try:
            verdicts = [self._sample(judge, output, text, expected, limit, first)]
            if k > 1 and not (confirm and verdicts[0].passed):
                verdicts += [self._sample(judge, output, text, expected, limit, first + i) for i in range(1, k)]
        except PromptOptError as exc:
            raise _at_the_callers_line(exc) from None
        trust = self._runtime.judges.trust(judge)
        verdict = replace(combine(verdicts), judge=INLINE_JUDGE if judge is None else judge.key,
                          advisory=not trust.gates)
        if isinstance(expected, str):  # the optimizer's evidence for this case shows it
            verdict = replace(verdict, expected=expected)
        self._record.verdicts.append(verdict)
        return verdict

    def pairwise(self, a: str, b: str, criteria: str | Judge, *, expected: str | None = None,
                 both_orders: bool = PAIRWISE_BOTH_ORDERS) -> PairVerdict:
        """Which of `a` and `b` better meets the criteria: 'a', 'b' or 'tie' (`.winner`). Asked
        with a shown first and, by default, again with b shown first (each its own cache entry);
        when the two orders disagree the verdict is a tie. Never fails the test by itself."""
        if not isinstance(a, str) or not isinstance(b, str):
            raise TypeError(f"judge.pairwise() compares two texts; got {type(a).__name__} and {type(b).__name__}")
        judge = criteria if isinstance(criteria, Judge) else None
        text = judge.criteria if judge is not None else criteria
        a_first = self._ask_pair(judge, a, b, text, expected)
        b_first = self._ask_pair(judge, b, a, text, expected) if both_orders else None
        verdict = pair_verdict(a_first, b_first, text, INLINE_JUDGE if judge is None else judge.key)
        self._record.pairs.append(verdict.to_dict())
        return verdict

    def _ask_pair(self, judge: Judge | None, first: str, second: str, criteria: str, expected: str | None) -> str:
        """One order of a pairwise call, `first` shown as A: the position the judge picked."""
        client = self._runtime.client("judge")
        # the built-in pairwise system prompt always: a judge file's own `system` asks for a score
        messages = pair_messages(first, second, criteria, expected)
        request = client.request(messages, PAIR_PARAMS, model=_own_model(judge), sample=self._record.draw)
        completion = _complete(client, request, self._record, JUDGE_KEY, "pairwise judge call")
        self._record.judge_traces.append(Trace.of(JUDGE_KEY, {}, tuple(request.message_dicts), request.model, completion))
        return read_position(completion.text)

    def __call__(self, output: str, criteria: str | Judge, *, expected: str | None = None,
                 threshold: float | None = None) -> Verdict:
        __tracebackhide__ = True  # a failure is reported at the test's `judge(...)` line
        verdict = self.grade(output, criteria, expected=expected, threshold=threshold)
        if not verdict.passed and not verdict.advisory:  # an advisory judge is shown, not counted
            raise JudgeFailed(verdict, output, expected)
        return verdict


__all__ = ["LLM", "JudgeCall", "Runtime"]
