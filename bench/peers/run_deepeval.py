"""deepeval's PromptOptimizer (its default algorithm, GEPA) on one benchmark task; run with the
peers' virtualenv python.

Usage: run_deepeval.py SPEC.json RESULT.json   (written by bench/bench_quality.py)

The prompt is our starting system message as a deepeval text Prompt; the model callback sends it
with the case's input as the user turn to the task model, exactly as the plugin renders it. The
metric is the task's own (a deepeval BaseMetric wrapping bench/peers/tasks.py: score). The
optimizer model is deepeval's LocalModel (OpenAI-compatible) on the same server. deepeval splits
the goldens it is given (train and validation together) into its own feedback and Pareto sets.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tasks import TASKS, run_peer, score

TASK = ""  # set in run(); the metric is copied by deepeval, so it takes no constructor arguments


def run(spec: dict[str, Any], out: dict[str, Any]) -> None:
    global TASK
    from deepeval.dataset import Golden
    from deepeval.metrics import BaseMetric
    from deepeval.models import LocalModel
    from deepeval.optimizer import PromptOptimizer
    from deepeval.optimizer.algorithms import GEPA
    from deepeval.optimizer.configs import AsyncConfig, DisplayConfig
    from deepeval.prompt import Prompt
    from openai import OpenAI

    TASK = spec["task"]
    task = TASKS[TASK]
    cases = json.loads(Path(spec["cases"]).read_text(encoding="utf-8"))["cases"]
    client = OpenAI(base_url=spec["base_url"], api_key=spec["api_key"], max_retries=0)

    def complete(system: str, user: str) -> str:
        reply = client.chat.completions.create(
            model=spec["model"], temperature=0, max_tokens=task.max_tokens,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
        return reply.choices[0].message.content or ""

    def callback(prompt: Any, golden: Any) -> str:
        return complete(prompt.text_template, golden.input)

    class TaskMetric(BaseMetric):
        def __init__(self) -> None:
            self.threshold = 0.5

        def measure(self, test_case: Any, *args: Any, **kwargs: Any) -> float:
            self.score = score(TASK, test_case.actual_output or "", test_case.expected_output or "")
            self.success = self.score >= self.threshold
            self.reason = "correct" if self.success else f"expected {test_case.expected_output!r}"
            return self.score

        async def a_measure(self, test_case: Any, *args: Any, **kwargs: Any) -> float:
            return self.measure(test_case)

        def is_successful(self) -> bool:
            return bool(self.success)

        @property
        def __name__(self) -> str:  # type: ignore[override]
            return "TaskMetric"

    fit = [Golden(input=task.user_text(c["inputs"]), expected_output=c["answer"])
           for c in cases if c["split"] in ("train", "validation")]
    test = [c for c in cases if c["split"] == "test"]

    def held_out(system: str) -> float:
        return sum(score(TASK, complete(system, task.user_text(c["inputs"])), c["answer"]) for c in test) / len(test)

    start_text = task.system_text().strip()
    out["before"] = held_out(start_text)
    optimizer_model = LocalModel(model=spec["model"], base_url=spec["base_url"], api_key=spec["api_key"],
                                 temperature=1.0)
    # Per iteration: a feedback pass and two scorings of a minibatch, one diagnosis and one
    # rewrite, and the child on the Pareto set.
    minibatch, pareto = 4, 3
    iterations = max(1, (spec["budget"] - pareto) // (3 * minibatch + 2 + pareto))
    algorithm = GEPA(iterations=iterations, minibatch_size=minibatch, pareto_size=pareto,
                     random_seed=spec["seed"], reflection_model=optimizer_model, mutation_model=optimizer_model)
    optimizer = PromptOptimizer(model_callback=callback, metrics=[TaskMetric()], optimizer_model=optimizer_model,
                                algorithm=algorithm, async_config=AsyncConfig(run_async=False),
                                display_config=DisplayConfig(show_indicator=False))
    started = time.perf_counter()
    best = optimizer.optimize(prompt=Prompt(text_template=start_text), goldens=fit)
    out["optimize_s"] = round(time.perf_counter() - started, 1)
    text = best.text_template or start_text
    out["after"] = held_out(text)
    out["notes"].append(f"GEPA iterations={iterations}, minibatch_size={minibatch}, pareto_size={pareto}; "
                        f"best: {text[:160]!r}")


if __name__ == "__main__":
    run_peer("deepeval", run, sys.argv[1], sys.argv[2])
