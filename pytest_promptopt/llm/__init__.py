"""LM access: the OpenAI-compatible client, its transport, the reply cache, embeddings, redaction
and the embedded server. May import the base modules only."""
