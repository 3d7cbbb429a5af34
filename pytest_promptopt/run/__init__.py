"""Running prompt tests: settings, the per-session runtime, test records, judges and checks,
markers, the call log, send-ahead and baseline files. May import prompts, llm and base."""
