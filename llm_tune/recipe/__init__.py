"""The recipe: its typed schema, reading (YAML, inherits, overrides) and every check made before a model loads.
Imports no torch, and nothing else of llm_tune but errors."""
