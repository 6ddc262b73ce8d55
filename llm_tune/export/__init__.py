"""Exporting a run: adapter, merged or GGUF folders, verified against the trained model (exporter.py), and push."""
