"""gepa.optimize with its DefaultAdapter on our starting prompt; run with the peers' virtualenv.

Usage: run_gepa.py SPEC.json RESULT.json   (written by bench/bench_quality.py)

The candidate is our starting system message (placeholders that are constant across cases
filled in), the user turn is the case's input, exactly as the plugin renders it. The adapter's
evaluator scores with the task's own metric (the default one checks that the answer is contained
in the reply, which would reward a model listing every label) and gives the default adapter's
style of feedback. Task and reflection model: the same server as every contender.

The cap: gepa's max_metric_calls counts task-model rollouts only; each reflection step adds one
call, so it gets the cap less an allowance for reflections (the bench's proxy refuses anything
beyond the cap).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tasks import TASKS, run_peer, score


def run(spec: dict[str, Any], out: dict[str, Any]) -> None:
    import gepa
    from gepa.adapters.default_adapter.default_adapter import (
        DefaultAdapter,
        EvaluationResult,
    )
    from gepa.lm import LM

    task = TASKS[spec["task"]]
    cases = json.loads(Path(spec["cases"]).read_text(encoding="utf-8"))["cases"]

    def inst(case: dict[str, Any]) -> dict[str, Any]:
        return {"input": task.user_text(case["inputs"]), "additional_context": {}, "answer": case["answer"]}

    train = [inst(c) for c in cases if c["split"] == "train"]
    val = [inst(c) for c in cases if c["split"] == "validation"]
    test = [inst(c) for c in cases if c["split"] == "test"]
    common = {"api_base": spec["base_url"], "api_key": spec["api_key"]}
    task_lm = LM(f"openai/{spec['model']}", temperature=0.0, max_tokens=task.max_tokens, num_retries=0, **common)
    # the plugin's proposer limit: the tiny model rambles to whatever limit it has
    reflection_lm = LM(f"openai/{spec['model']}", temperature=1.0, max_tokens=160, num_retries=0, **common)

    def evaluator(data: dict[str, Any], response: str) -> Any:
        s = score(task.name, response or "", data["answer"])
        if s >= 1.0:
            feedback = f"The generated response is correct: '{data['answer']}'."
        else:
            feedback = (f"The generated response is incorrect. The correct answer is '{data['answer']}'. "
                        "Reply with exactly the correct answer and nothing else.")
        return EvaluationResult(score=s, feedback=feedback, objective_scores=None)

    adapter = DefaultAdapter(model=task_lm, evaluator=evaluator)
    seed = {"system_prompt": task.system_text().strip()}

    def held_out(candidate: dict[str, str]) -> float:
        batch = adapter.evaluate(test, candidate, capture_traces=False)
        return sum(batch.scores) / len(batch.scores)

    out["before"] = held_out(seed)
    # One reflection call per iteration; an iteration scores a minibatch (3) twice, so about
    # one call in seven is a reflection.
    metric_calls = max(len(val) + 6, int(spec["budget"] * 6 / 7))
    started = time.perf_counter()
    result = gepa.optimize(seed_candidate=seed, trainset=train, valset=val, adapter=adapter,
                           reflection_lm=reflection_lm, max_metric_calls=metric_calls, seed=spec["seed"],
                           raise_on_exception=False, display_progress_bar=False,
                           run_dir=str(Path(spec["work"]) / "gepa-run"))
    out["optimize_s"] = round(time.perf_counter() - started, 1)
    best = result.best_candidate
    out["after"] = held_out(best)
    out["notes"].append(f"max_metric_calls={metric_calls}; {len(result.candidates)} candidates; "
                        f"best: {best['system_prompt'][:160]!r}")


if __name__ == "__main__":
    run_peer("gepa", run, sys.argv[1], sys.argv[2])
