"""DSPy MIPROv2 on one benchmark task; run with the peers' virtualenv python.

Usage: run_dspy.py SPEC.json RESULT.json   (written by bench/bench_quality.py)

The program is one dspy.Predict whose signature carries our starting instruction; inputs and
output are the task's fields. Task and proposal model: the same OpenAI-compatible server as
every contender (through the bench's counting proxy). Mode "light" is MIPROv2(auto="light"),
DSPy's own budget; mode "matched" sizes candidates and trials so the estimated calls fit the cap.

Adapter: ChatAdapter without its JSON-adapter fallback. The fallback asks the server for
grammar-constrained JSON, which the embedded llama.cpp server produces at several seconds per
call (NOTES.md), so a run would not fit the benchmark's time; a parse failure counts as a wrong
answer instead (failure_score 0), and max_errors is raised so a run is not stopped by them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tasks import TASKS, run_peer, score


def run(spec: dict[str, Any], out: dict[str, Any]) -> None:
    import dspy
    from dspy.teleprompt import MIPROv2

    task = TASKS[spec["task"]]
    cases = json.loads(Path(spec["cases"]).read_text(encoding="utf-8"))["cases"]

    def example(case: dict[str, Any]) -> Any:
        fields = {k: case["inputs"][k] for k in task.inputs}
        return dspy.Example(**fields, **{task.output: case["answer"]}).with_inputs(*task.inputs)

    train = [example(c) for c in cases if c["split"] == "train"]
    val = [example(c) for c in cases if c["split"] == "validation"]
    test = [example(c) for c in cases if c["split"] == "test"]

    common = {"api_base": spec["base_url"], "api_key": spec["api_key"], "num_retries": 0}
    # Task answers are short; the output format needs ~20 tokens around the answer. The proposer
    # gets the plugin's proposer limit (160 tokens): the tiny model rambles to whatever limit it has.
    task_lm = dspy.LM(f"openai/{spec['model']}", temperature=0.0, max_tokens=task.max_tokens + 24, **common)
    prompt_lm = dspy.LM(f"openai/{spec['model']}", temperature=1.0, max_tokens=160, **common)
    dspy.configure(lm=task_lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False), max_errors=10**6)
    out["notes"].append("ChatAdapter without JSON fallback; task max_tokens "
                        f"{task.max_tokens + 24}, proposer max_tokens 160 (as the plugin's proposer), temperature 1.0")

    signature = dspy.Signature(", ".join(task.inputs) + " -> " + task.output, task.system_text().strip())
    program = dspy.Predict(signature)

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        return score(task.name, str(getattr(prediction, task.output, "") or ""), example[task.output])

    evaluate = dspy.Evaluate(devset=test, metric=metric, num_threads=1, display_progress=False,
                             max_errors=10**6, failure_score=0.0)
    out["before"] = evaluate(program).score / 100.0

    started = time.perf_counter()
    if spec["mode"] == "light":
        optimizer = MIPROv2(metric, prompt_model=prompt_lm, task_model=task_lm, auto="light", num_threads=1,
                            max_errors=10**6, seed=spec["seed"], verbose=False)
        compiled = optimizer.compile(program, trainset=train, valset=val)
        out["notes"].append("auto=light")
    else:
        n, trials, minibatch = matched(spec["budget"], len(train), len(val))
        optimizer = MIPROv2(metric, prompt_model=prompt_lm, task_model=task_lm, auto=None, num_candidates=n,
                            num_threads=1, max_errors=10**6, seed=spec["seed"], verbose=False)
        compiled = optimizer.compile(program, trainset=train, valset=val, num_trials=trials,
                                     minibatch=minibatch < len(val), minibatch_size=minibatch,
                                     minibatch_full_eval_steps=5)
        out["notes"].append(f"num_candidates={n}, num_trials={trials}, minibatch_size={minibatch} "
                            f"(estimated to fit {spec['budget']} calls)")
    out["optimize_s"] = round(time.perf_counter() - started, 1)
    out["after"] = evaluate(compiled).score / 100.0
    instructions = compiled.signature.instructions
    out["notes"].append(f"{len(compiled.demos)} demos; instruction: {instructions[:160]!r}")


def matched(budget: int, n_train: int, n_val: int) -> tuple[int, int, int]:
    """Candidates, trials and minibatch size whose worst-case call count fits the budget.

    Worst case with a model that rarely gets an answer right: every bootstrapped demo set walks
    the whole train set (n + 1 sets), the proposer makes about n_train/10 + 3 + n calls, the
    default program is scored on validation once, each trial scores a minibatch, and every 5
    trials plus the end the best is scored on the full validation set.
    """
    best = (2, 2, min(10, n_val))
    for n in range(2, 13):
        for trials in range(2, 61):
            mb = min(max(5, n_val // 3), n_val)
            calls = ((n + 1) * n_train + math.ceil(n_train / 10) + 3 + n + n_val + trials * mb
                     + (trials // 5 + 1) * n_val)
            if calls <= budget and (n, trials) > best[:2] and trials >= 1.5 * n:
                best = (n, trials, mb)
    return best


if __name__ == "__main__":
    run_peer("dspy", run, sys.argv[1], sys.argv[2])
