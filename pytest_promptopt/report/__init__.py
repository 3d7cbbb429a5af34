"""What a run reports: per-prompt summary, JSON report data, the baseline comparison and gate,
the run header and the HTML report. May import optimize, run, prompts, llm and base."""
