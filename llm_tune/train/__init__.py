"""Training: the pipeline (pipeline.py, top to bottom), the trainers and their loss, checkpoints and resume,
signals, and launch checks."""
