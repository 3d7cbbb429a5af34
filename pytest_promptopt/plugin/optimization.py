"""`--optimize` on the pytest side: gather what the run recorded, hand each group of prompts to
the core loop with a PytestProgram, and plan the write-back of the winners. Returns data; the
session renders it, queues the writes and stores it in the JSON report."""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from ..run.baseline import Baseline, prompt_name
from ..llm.client import Budget
from ..run.config import OptimizeSettings
from ..defaults import EMBEDDED_CONTEXT_TOKENS, OPTIMIZER_CONTEXT_TOKENS, PRESETS
from ..errors import WriteBackError
from ..optimize import strategies
from ..optimize.base import Case, Strategy
from ..optimize.before import BaselineBefore, before_from_baseline
from ..optimize.loop import Group, GroupResult, assign_splits, optimize_group
from ..optimize.proposer import Proposer, ProposerLimits
from ..optimize.runlog import RunLog, run_key
from ..run.record import CaseOutcome
from ..report.summary import display
from ..run.runtime import Runtime
from ..prompts.writeback import PendingWrite, plan_write
from .program import PytestProgram
from .progress import Progress
from .stash import OUTCOME_KEY, marker_of


@dataclass(frozen=True)
class OptimizationRun:
    notes: tuple[str, ...] = ()  # about the run as a whole (nothing to optimize, left-out tests)
    groups: tuple[GroupResult, ...] = ()
    writes: tuple[PendingWrite, ...] = ()  # to apply at the end of the session (none in a dry run)
    unscored: tuple[tuple[str, str], ...] = ()  # (node id, error) of re-runs whose LM call failed
    errors: tuple[str, ...] = ()  # planned writes that could not be made
    planned: tuple[tuple[tuple[str, PendingWrite], ...], ...] = ()  # per group: (prompt key, write) its winner needs


def run_every_test(config: pytest.Config) -> list[str]:
    """`--optimize` learns from every test's result, so `-x`/`--maxfail` (often in addopts)
    would leave it nothing to work with: the run goes on, and the section says so."""
    maxfail = getattr(config.option, "maxfail", 0)
    if not maxfail:
        return []
    config.option.maxfail = 0
    return [(f"ran every test although -x/--maxfail={maxfail} was given: "
             "--optimize needs the result of each test to learn from")]


def quiet_tracebacks(config: pytest.Config) -> list[str]:
    """The run before the optimization is its "before": the prompt table sums it up per prompt,
    so its tracebacks (hundreds of them on a failing prompt) are off unless --tb was given."""
    if getattr(config.option, "tbstyle", "auto") != "auto" or _given(config, "--tb"):
        return []
    config.option.tbstyle = "no"
    return [("the tests' tracebacks are not shown (--tb=no): the run before the optimization is its \"before\", "
             "summed up per prompt in the table above; pass --tb=short to see them")]


def resume_note(config: pytest.Config, cache_dir: Path) -> str:
    """Said when Ctrl-C or SIGTERM stops the optimization: the run log keeps every score."""
    return (f"interrupted: nothing was written; every candidate scored so far is in the run log under {cache_dir / 'runs'}, "
            f"so `{_command(config, ['--optimize-resume'])}` continues where this run stopped")


def rerun_command(config: pytest.Config) -> str:
    """This run's command without its --optimize options: what shows the written prompt's results."""
    return _command(config, [], keep_optimize=False)


_OPTIMIZE_FLAGS = ("--optimize", "--optimize-dry-run", "--optimize-resume")  # the --optimize options without a value


def _command(config: pytest.Config, extra: list[str], keep_optimize: bool = True) -> str:
    args, skip = [], False
    for arg in map(str, config.invocation_params.args):
        if skip:
            skip = False
            continue
        if not keep_optimize and arg.startswith("--optimize"):
            skip = "=" not in arg and arg not in _OPTIMIZE_FLAGS  # its value is the next argument
            continue
        args.append(arg)
    args += [a for a in extra if a not in args]
    return " ".join(["pytest", *(shlex.quote(a) for a in args)])


def _given(config: pytest.Config, flag: str) -> bool:
    return any(str(a) == flag or str(a).startswith(flag + "=") for a in config.invocation_params.args)


@dataclass
class _Recorded:
    """The tests of the run that called prompts, as the optimizer needs them."""

    items: dict[str, pytest.Item] = field(default_factory=dict)
    outcomes: dict[str, CaseOutcome] = field(default_factory=dict)
    holdout: set[str] = field(default_factory=set)
    by_prompt: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unscored: int = 0


def _recorded(items: Sequence[pytest.Item]) -> _Recorded:
    out = _Recorded()
    for item in items:
        outcome = item.stash.get(OUTCOME_KEY, None)
        if outcome is None or not outcome.calls:
            continue
        if outcome.error:  # its baseline is the endpoint's failure, not the prompt's: no evidence either way
            out.unscored += 1
            continue
        out.items[item.nodeid], out.outcomes[item.nodeid] = item, outcome
        if marker_of(item).holdout:
            out.holdout.add(item.nodeid)
            continue
        for key in dict.fromkeys(c.prompt_key for c in outcome.calls):
            out.by_prompt[key].append(item.nodeid)
    return out


def _targets(rec: _Recorded, settings: OptimizeSettings, root: Path, notes: list[str]) -> list[str]:
    for path in settings.prompts:
        if str(path) not in rec.by_prompt:
            notes.append(f"{display(str(path), root)}: no test called this prompt, so it cannot be optimized")
    if settings.prompts:
        return [k for k in rec.by_prompt if Path(k) in settings.prompts]
    return [k for k, ids in rec.by_prompt.items() if any(not rec.outcomes[n].passed for n in ids)]


def run_optimization(session: pytest.Session, runtime: Runtime, settings: OptimizeSettings,
                     baseline: tuple[Baseline, str] | None = None) -> OptimizationRun:
    """`baseline`: the loaded baseline and its path as given, shown as each group's "before"."""
    config = session.config
    root = Path(config.rootpath)
    rec = _recorded(session.items)
    notes: list[str] = []
    if rec.unscored:
        notes.append(f"left out {rec.unscored} test(s) whose LM call failed in the run above: they could not be scored")
    targets = _targets(rec, settings, root, notes)
    if not rec.by_prompt:
        return OptimizationRun((*notes, "no test made a successful LM call through the llm fixture: nothing to optimize"))
    if not targets:
        return OptimizationRun((*notes, "every test of every prompt passes: nothing to optimize"))
    program = PytestProgram(runtime, rec.items, rec.outcomes)
    factory = strategies.choose(strategies.registry(config.hook.pytest_promptopt_strategies()), settings.strategy)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    groups, writes, errors, per_group = [], [], [], []
    for keys in _groups(targets, rec):
        group = _group(keys, rec, runtime)
        label = ", ".join(display(k, root) for k in keys)
        strategy = strategies.with_preset(factory(), settings.preset)
        with Progress(tr, lambda: _requests(runtime), label, settings.budget,
                      interval=settings.progress_interval) as progress:
            result = _optimize(group, program, strategy, runtime, settings, progress)
        planned: list[tuple[str, PendingWrite]] = []
        if result.accepted:
            try:
                planned = [(k, plan_write(group.original[k], result.best[k]))
                           for k in keys if result.best[k] != group.original[k]]
            except WriteBackError as exc:
                errors.append(str(exc))
        groups.append(replace(result, diff="".join(w.diff() for _, w in planned),
                              notes=(*result.notes, *(note for _, w in planned for note in w.notes)),
                              baseline_before=_before(group, baseline, root)))
        writes.extend(() if settings.dry_run else (w for _, w in planned))
        per_group.append(() if settings.dry_run else tuple(planned))  # a dry run: the files are what ran
    return OptimizationRun(tuple(notes), tuple(groups), tuple(writes), tuple(program.unscored), tuple(errors),
                           tuple(per_group))


def _before(group: Group, baseline: tuple[Baseline, str] | None, root: Path) -> tuple[BaselineBefore, ...]:
    if baseline is None:
        return ()
    prompts = {prompt_name(k, root): p.source_digest for k, p in group.original.items()}
    splits = {"train": [c.nodeid for c in group.train], "validation": [c.nodeid for c in group.validation],
              "holdout": [c.nodeid for c in group.holdout]}
    return before_from_baseline(baseline[0], baseline[1], prompts, splits)


def _requests(runtime: Runtime) -> int:
    return sum(c.usage().requests for c in runtime.clients().values())


def _group(keys: list[str], rec: _Recorded, runtime: Runtime) -> Group:
    nodeids = sorted({n for k in keys for n in rec.by_prompt[k]})
    splits = assign_splits(nodeids)
    held = sorted(n for n in rec.holdout if any(c.prompt_key in keys for c in rec.outcomes[n].calls))

    def case(nodeid: str, split: str) -> Case:
        o = rec.outcomes[nodeid]
        return Case(nodeid, split, o.passed, o.score, o.message)

    return Group({k: runtime.prompts[k] for k in keys}, tuple(case(n, splits[n]) for n in nodeids),
                 tuple(case(n, "holdout") for n in held), tuple(rec.outcomes[n] for n in [*nodeids, *held]))


def _optimize(group: Group, program: PytestProgram, strategy: Strategy, runtime: Runtime,
              settings: OptimizeSettings, progress: Progress) -> GroupResult:
    log = RunLog(runtime.settings.cache_dir / "runs",
                 run_key(group.original.values(), strategy.name, settings.seed, settings.budget), resume=settings.resume)
    budget = Budget(settings.budget, settings.token_budget)
    try:
        with runtime.budgeted(budget):
            return optimize_group(group, program, strategy=strategy,
                                  proposer=Proposer(runtime.client("optimizer"), settings.seed, log.write,
                                                    _limits(runtime, settings)),
                                  budget=budget, usage=runtime.usage, log=log, settings=settings, progress=progress)
    finally:
        log.close()


def _limits(runtime: Runtime, settings: OptimizeSettings) -> ProposerLimits:
    tokens = settings.context_tokens or (
        EMBEDDED_CONTEXT_TOKENS if runtime.settings.role("optimizer").embedded else OPTIMIZER_CONTEXT_TOKENS)
    return ProposerLimits(tokens, **PRESETS[settings.preset].proposer)


def _groups(targets: list[str], rec: _Recorded) -> list[list[str]]:
    """Prompts that share a test are optimized together (a multi-stage program)."""
    parent = {k: k for k in targets}

    def find(k: str) -> str:
        while parent[k] != k:
            k = parent[k]
        return k

    for key in targets:
        for nodeid in rec.by_prompt[key]:
            for call in rec.outcomes[nodeid].calls:
                if call.prompt_key in parent:
                    parent[find(call.prompt_key)] = find(key)
    groups: dict[str, list[str]] = defaultdict(list)
    for key in targets:
        groups[find(key)].append(key)
    return [sorted(g) for g in groups.values()]

