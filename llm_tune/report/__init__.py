"""The run report: OUTPUT_DIR/report.html (self-contained: plots embedded, inline CSS, nothing fetched) and its
PNG plots under OUTPUT_DIR/report/, built only from the files a run leaves (trainer_state.json's log, metrics,
eval/, samples.jsonl, environment.json), so `llm_tune report` rebuilds it, or overlays several runs, without a
model."""
