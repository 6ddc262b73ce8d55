"""doctor: the pre-flight check of a recipe before any training (diagnosis.py orchestrates)."""
