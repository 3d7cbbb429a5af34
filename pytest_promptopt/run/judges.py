"""The judges of a session: each judge file's identity, its trust in this run, and calibration.

Calibration runs a judge file over its labelled set through the judge client (so through the
cache, like every LM call), and writes the card next to the judge file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import JudgeError, PromptFileError, PromptOptError
from ..llm.cache import ChatRequest
from ..llm.client import Completion, LMClient
from ..prompts.judge_pool import JudgePool
from ..prompts.judgefile import Judge, load_judge
from ..prompts.labels import LabelledCase, load_labels, load_reviewed, merged_cases
from .card import (
    GATE,
    UNCALIBRATED,
    Card,
    JudgeTrust,
    build_card,
    read_card,
    trust_of,
    write_card,
)
from .config import Settings
from .judge import INLINE_JUDGE, template_digest, verdict_of
from .panel import panel_verdict


class JudgeRuntime(Protocol):
    """What the judge book needs of the session's runtime (runtime.Runtime provides it)."""

    settings: Settings

    def client(self, role: str) -> LMClient: ...

    def judge_mode(self, judge: Judge | None) -> str: ...

    def judge_request(self, judge: Judge | None, output: str, criteria: str, expected: str | None,
                      sample: int = 0, member: str | None = None,
                      pool: JudgePool | None = None) -> tuple[LMClient, ChatRequest]: ...


@dataclass(frozen=True)
class Calibration:
    judge: Judge
    card: Card

    def line(self) -> str:
        m, c = self.card.metrics, self.card.confusion
        k = m["kappa"]
        return (f"{self.judge.path.name}: {c.n} labels ({c.positives} pass, {c.negatives} fail): agreement "
                f"{m['agreement'].value:.3f}, kappa {k.value:.3f} [{k.low:.3f}, {k.high:.3f}], TPR {m['tpr'].value:.3f}, "
                f"TNR {m['tnr'].value:.3f}; card {self.judge.card_path}")


class JudgeBook:
    def __init__(self, runtime: JudgeRuntime) -> None:
        self._runtime = runtime
        self._trust: dict[str, JudgeTrust] = {}
        self._pools: dict[str, tuple[tuple[str, ...], JudgePool]] = {}
        self._lock = threading.Lock()

    def threshold(self, judge: Judge) -> float:
        return judge.threshold if judge.threshold is not None else self._runtime.settings.judge_threshold

    def identity(self, judge: Judge) -> dict[str, Any]:
        """What a card measured: any change of it makes the card stale."""
        mode = self._runtime.judge_mode(judge)
        endpoint = self._runtime.client("judge").endpoint
        labels = judge.labels_path
        try:
            labels_digest = hashlib.sha256(labels.read_bytes()).hexdigest() if labels is not None else None
        except OSError:
            labels_digest = None
        identity = {"criteria": judge.criteria, "template_sha256": template_digest(mode, judge.system, judge.demos), "mode": mode,
                    "model": judge.model or endpoint.model, "served_by": endpoint.served_by,
                    "threshold": self.threshold(judge), "labels_sha256": labels_digest}
        if judge.retrieve_k:  # only a retrieving judge's card carries it: existing cards stay current
            identity["retrieve_k"] = judge.retrieve_k
        if judge.is_panel:  # only a panel's card carries these: existing cards stay current
            identity |= {"model": ", ".join(judge.models), "panel": judge.panel}
        reviewed = load_reviewed(judge.review_path)
        if reviewed:  # the human-labelled review cases are labels too; the unlabelled ones are not
            identity["reviewed_sha256"] = hashlib.sha256(json.dumps(
                [[c.output, c.expected, c.score] for c in reviewed]).encode()).hexdigest()
        return identity

    def trust(self, judge: Judge | None) -> JudgeTrust:
        """The judge's status and whether it gates; inline criteria are uncalibrated."""
        settings = self._runtime.settings
        if judge is None:
            return trust_of(None, {}, settings.judge_uncalibrated, settings.judge_min_kappa)
        with self._lock:
            known = self._trust.get(judge.key)
        if known is None:
            known = trust_of(read_card(judge.card_path), self.identity(judge), settings.judge_uncalibrated,
                             settings.judge_min_kappa)
            with self._lock:
                self._trust[judge.key] = known
        return known

    def trust_by_key(self, key: str) -> JudgeTrust:
        """The trust of a judge named as a verdict names it (a judge file's path, or INLINE_JUDGE)."""
        if key == INLINE_JUDGE:
            return self.trust(None)
        try:
            return self.trust(load_judge(Path(key)))
        except PromptOptError as exc:  # moved or broken since the test loaded it
            return JudgeTrust(UNCALIBRATED, self._runtime.settings.judge_uncalibrated == GATE,
                              f"the judge file cannot be read now: {exc}")

    def labelled(self, judge: Judge) -> tuple[LabelledCase, ...]:
        """The judge's labelled cases: its labels file and the human-labelled review lines."""
        if judge.labels_path is None:
            raise PromptFileError(judge.path, "has no labelled set", field="labels",
                                  fix=f"add labels: {judge.path.stem}.labels.jsonl (one JSON case a line: output, verdict)")
        return merged_cases(load_labels(judge.labels_path), load_reviewed(judge.review_path))

    def pool(self, judge: Judge) -> JudgePool:
        """The labelled cases a retrieving judge draws from, read again when a file changed."""
        stamp = tuple(_stamp(p) for p in (judge.labels_path, judge.review_path) if p is not None)
        with self._lock:
            kept = self._pools.get(judge.key)
            if kept is not None and kept[0] == stamp:
                return kept[1]
        pool = JudgePool(self.labelled(judge))
        with self._lock:
            self._pools[judge.key] = (stamp, pool)
        return pool

    def forget(self, judge: Judge) -> None:
        """Read the judge's card again when next asked (it was just written)."""
        with self._lock:
            self._trust.pop(judge.key, None)

    def calibrate(self, judge: Judge) -> Calibration:
        """Grade every labelled case (and every case a human labelled in the review file), build
        the card and write it next to the judge file."""
        if judge.labels_path is None:
            raise PromptFileError(judge.path, "has no labelled set to calibrate on", field="labels",
                                  fix=f"add labels: {judge.path.stem}.labels.jsonl (one JSON case a line: output, verdict)")
        labels = load_labels(judge.labels_path)
        every = merged_cases(labels, load_reviewed(judge.review_path))
        demos = {d.seen for d in judge.demos}
        cases = tuple(c for c in every if c.seen not in demos)  # never graded with its answer shown
        threshold = self.threshold(judge)
        warnings = labels.check_classes(threshold)
        if len(cases) < len(every):
            warnings.append(f"{len(every) - len(cases)} labelled case(s) are the judge's own demos and were not graded")
        graded = self.grade_cases(judge, cases, threshold, labels.path)
        keys, truth, scores = [], [], []
        for case, score in zip(cases, graded):
            if score is not None:
                keys.append(f"{case.line}:{case.output}")
                truth.append(case.passed(threshold))
                scores.append(score)
        ungraded = graded.count(None)
        if len(set(truth)) < 2:
            raise PromptOptError(f"{labels.path}: the judge graded too few cases of each class to calibrate "
                                 f"({ungraded} replies had no readable verdict)")
        card = build_card(judge.path.name, self.identity(judge), keys, truth, scores, threshold,
                          ungraded=ungraded, warnings=warnings)
        write_card(judge.card_path, card)
        self.forget(judge)
        return Calibration(judge, card)

    def grade_cases(self, judge: Judge, cases: Sequence[LabelledCase], threshold: float, where: Path,
                    pool: JudgePool | None = None) -> list[float | None]:
        """Each case's score (a panel's verdict for a panel), None where a reply had no verdict.
        `judge` may be a candidate being tuned (its criteria, system, demos replaced) and `pool`
        the labelled cases it retrieves from (default: its whole labelled set)."""
        if not cases:
            return []
        mode = self._runtime.judge_mode(judge)
        members = judge.models if judge.is_panel else (None,)
        requests = [self._runtime.judge_request(judge, c.output, judge.criteria, c.expected, 0, m, pool)
                    for c in cases for m in members]
        replies = requests[0][0].complete_many([r for _, r in requests])
        out: list[float | None] = []
        for i, case in enumerate(cases):
            verdicts = []
            for model, reply in zip(members, replies[i * len(members):(i + 1) * len(members)]):
                if isinstance(reply, BaseException) and not isinstance(reply, JudgeError):
                    raise PromptOptError(f"{where}:{case.line}: calibration stopped: {reply}") from reply
                try:
                    assert isinstance(reply, Completion)
                    verdicts.append((str(model), verdict_of(reply.reply, mode, threshold=threshold)))
                except (JudgeError, AssertionError):
                    break
            if len(verdicts) < len(members):
                out.append(None)
            else:
                out.append(panel_verdict(verdicts, judge.panel, threshold).score if judge.is_panel
                           else verdicts[0][1].score)
        return out


def _stamp(path: Path) -> str:
    """A file's inode, size and change times, or '-' when it does not exist: an edit that keeps
    the size and the modification time (a verdict flipped, mtime restored) still moves ctime."""
    try:
        info = path.stat()
    except OSError:
        return "-"
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"
