"""`llm_tune report RUN_DIR [RUN_DIR ...] [--out FILE]`: rebuild a run's report, or compare several runs."""

from __future__ import annotations

from pathlib import Path

from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.extras import require

COMPARISON = Path("report-compare.html")  # several runs, no --out: in the current directory


def report_command(run_dirs: list[Path], out: Path | None) -> Path:
    if len(set(map(Path.resolve, run_dirs))) < len(run_dirs):
        raise UserError("report: the same run folder is given twice; give each run once")
    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out: {out} is not an .html file; give a path ending in .html")
    require("matplotlib", "report")
    from llm_tune.report.page import write_comparison, write_run_report

    if len(run_dirs) == 1:
        page = write_run_report(run_dirs[0], out)
    else:
        page = write_comparison(run_dirs, out or COMPARISON)
    say(f"report written to {page}")
    return page
