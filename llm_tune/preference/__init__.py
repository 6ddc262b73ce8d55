"""Preference tuning (task: preference): DPO, KTO, ORPO and SimPO through TRL's trainers, started from the base or
a finished SFT run (start.py), built from the recipe (trainer.py), and checked before the first step (gate.py)."""
