"""Trying a trained model: `generate` (one answer per prompt, beside the base model's with --compare-base) and
`chat` (multi-turn, streamed), rendered exactly as training rendered its rows, plus the few greedy samples the
end of training saves for the run report."""
