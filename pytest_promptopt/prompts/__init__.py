"""Prompt files: load, validate and render templates, demos, retrieved demos, byte-minimal YAML
edits and write-back. May import the base modules only."""
