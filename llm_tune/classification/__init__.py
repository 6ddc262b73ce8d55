"""Classification: the sequence and generate heads, label scoring, and the eval and predict commands."""
