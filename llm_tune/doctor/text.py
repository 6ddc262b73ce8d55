"""The doctor's report as console text: one titled section per check, numbers aligned, warnings last."""

from __future__ import annotations

from llm_tune.doctor.checks import marked
from llm_tune.doctor.estimate import GIB
from llm_tune.doctor.report import DoctorReport, PreferenceReport
from llm_tune.doctor.timing import duration


def report_lines(r: DoctorReport) -> list[str]:
    lines = [f"llm_tune doctor: {r.recipe}", f"  model     {r.model}",
             f"  strategy  {r.strategy}: {r.trainable_params:,} trainable of {r.total_params:,} params"
             f" ({100 * r.trainable_params / max(r.total_params, 1):.2f}%)"]  # fmt: skip
    sections = (_device, _launch if r.launch is not None else None, _memory, _tokens,
                _sources if r.sources is not None else None, _trained,
                _labels if r.labels is not None else None, _duplicates, _rows, _time)  # fmt: skip
    for section in filter(None, sections):
        lines += ["", *section(r)]
    if r.warnings:
        lines += ["", *(f"warning: {w}" for w in r.warnings)]
    problems = len(r.errors)
    verdict = f"{problems} problem{'s' * (problems != 1)} (below)" if problems else "no problems"
    lines += ["", f"doctor: {verdict}, {len(r.warnings)} warning{'s' * (len(r.warnings) != 1)}"]
    return lines


def _launch(r: DoctorReport) -> list[str]:
    a = r.launch or {}
    return [
        "launch",
        f"  config    {a['config']}",
        f"  type      {a['distributed_type']}, {a['num_processes']} process(es) on {a['num_machines']} machine(s),"
        f" mixed_precision {a['mixed_precision']}",
        f"  batch     {a['global_batch']} rows per optimizer step",
    ]


def _device(r: DoctorReport) -> list[str]:
    d = r.device
    return ["device and dtype", f"  device    {d.device} ({d.name})", f"  weights   {d.base}",
            f"  compute   {d.compute} ({d.why})"]  # fmt: skip


def _memory(r: DoctorReport) -> list[str]:
    m, d = r.memory, r.device
    s = m.step
    where = "resident memory" if d.device == "cpu" else "GPU memory; the CUDA context comes on top"
    unit, size = ("GiB", GIB) if m.peak_bytes >= GIB else ("MiB", 2**20)
    lines = [f"memory estimate (peak of a step: batch {s.batch} x {s.tokens} tokens, gradient through"
             f" {s.reached_blocks} of {m.blocks} blocks; {where})"]  # fmt: skip
    for name, item in m.items.items():
        lines.append(f"  {name:<16} {item.bytes / size:>8.2f} {unit}   {item.how}")
    lines.append(f"  {'peak':<16} {m.peak_bytes / size:>8.2f} {unit}   of {d.memory_total / GIB:.1f} GiB"
                 f" ({d.memory_available / GIB:.1f} GiB available now)")  # fmt: skip
    lines.append(f"  {'':<16} {'':>12}   peak = {m.peak_rule}")
    return lines


def _tokens(r: DoctorReport) -> list[str]:
    stats = r.tokens
    max_length = next(iter(stats.values())).max_length
    lines = [f"tokens per row (as the trainer tokenizes them; data.max_length {max_length})",
             f"  {'split':<11} {'rows':>6} {'min':>6} {'median':>7} {'p95':>6} {'max':>6} {'truncated':>10}"]  # fmt: skip
    for split, s in stats.items():
        lines.append(f"  {split:<11} {s.rows:>6} {s.min:>6} {s.median:>7g} {s.p95:>6} {s.max:>6} {s.truncated:>10}")
    return lines


def _sources(r: DoctorReport) -> list[str]:
    lines = ["sources (data.train: weights are shares of an epoch; tokens as they train, validation's before"
             " truncation)", f"  {'split':<11} {'source':<16} {'rows':>8} {'tokens':>11} {'weight':>7} {'epoch rows':>11}"]  # fmt: skip
    for s in r.sources or []:
        weight = f"{s.weight:g}" if s.weight is not None else ""
        epoch = f"{s.epoch_rows:,}" if s.epoch_rows is not None else ""
        lines.append(f"  {s.split:<11} {s.name:<16} {s.rows:>8,} {s.tokens:>11,} {weight:>7} {epoch:>11}")
    return lines


def _trained(r: DoctorReport) -> list[str]:
    t = r.trained_tokens
    pad, eos = t["pad"], t["eos"]
    same = "the same as" if pad["id"] == eos["id"] else "not"
    lines = [
        "trained tokens",
        f"  pad       {pad['token']} (id {pad['id']}), {same} EOS {eos['token']} (id {eos['id']})",
    ]
    if "answers_checked" in t and "trained_per_row" in t:
        lines.append(f"  EOS       trained at the end of {t['answers_ending_with_eos']} of {t['answers_checked']}"
                     " answers (rows max_length keeps whole)")  # fmt: skip
        lines.append(f"  trained   {t['trained_per_row']['mean']:.1f} tokens per row on average;"
                     f" {t['truncated_rows_losing_eos']} truncated rows lose their end,"
                     f" {t['dropped_rows']} keep no trained token")  # fmt: skip
    else:
        lines.append(f"  answers   {t['answers']}")
    return lines


def _labels(r: DoctorReport) -> list[str]:
    splits = r.labels or {}
    width = max(len(label) for label in splits["train"]) + 2
    head = "".join(f"{split:>18}" for split in splits)
    lines = ["label balance", f"  {'label':<{width}}{head}"]
    for label in splits["train"]:
        cells = ""
        for counts in splits.values():
            share = 100 * counts[label] / max(sum(counts.values()), 1)
            cells += f"{counts[label]:>10} ({share:4.1f}%)"
        lines.append(f"  {label:<{width}}{cells}")
    return lines


def _duplicates(r: DoctorReport) -> list[str]:
    d = r.duplicates
    lines = ["duplicates (near: the same text up to case, punctuation and spacing)"]
    for split, s in (("train", d.train), ("validation", d.validation)):
        if s is not None:
            lines.append(f"  {split:<11} exact {s.exact_duplicates:>5}   near {s.near_duplicates:>5}"
                         f"   conflicting labels {s.conflicting_labels:>4}")  # fmt: skip
    if d.train_validation_overlap is not None:
        lines.append(f"  leakage     {d.train_validation_overlap} validation rows also in train")
    return lines


def _rows(r: DoctorReport) -> list[str]:
    lines = ["two training rows ([[...]] marks the tokens that train)" if "label" not in (r.rows or [{}])[0]
             else "two training rows ([[...]] marks the token the classifier head reads)"]  # fmt: skip
    for row in r.rows:
        label = f" -> label {row['label']!r}" if "label" in row else ""
        lines.append(f"  row {row['row']}{label}:")
        text = marked([tuple(piece) for piece in row["segments"]], visible_newlines=True).rstrip("\n")
        lines += [f"    {line}" for line in text.split("\n")]
    return lines


def _time(r: DoctorReport) -> list[str]:
    t = r.time
    if t is None:
        return ["time      not measured: no row keeps a trained token"]
    return [
        f"time (measured: {t.steps} optimizer steps on {t.sampled_rows} sampled rows, one process; the first"
        " step warms up and is not timed)",
        f"  per step   {t.seconds_per_step:>8.2f} s    ({t.tokens_per_s:.0f} non-padding tokens/s)",
        f"  per epoch  {duration(t.epoch_seconds):>10}    ({t.steps_per_epoch} step{'s' * (t.steps_per_epoch != 1)}, {t.epoch_tokens:,} tokens)",
        f"  this run   {duration(t.run_seconds):>10}    ({t.run})",
    ]


def preference_lines(r: PreferenceReport) -> list[str]:
    """A preference recipe's report: rows, lengths, the reference, and the measured memory and time."""
    lines = [f"llm_tune doctor: {r.recipe}", f"  model     {r.model}",
             f"  strategy  {r.strategy}: {r.trainable_params:,} trainable of {r.total_params:,} params"
             f" ({100 * r.trainable_params / max(r.total_params, 1):.2f}%)",
             f"  method    {r.method}", f"  reference {r.reference}", ""]  # fmt: skip
    d = r.device
    lines += ["device and dtype", f"  device    {d.device} ({d.name})", f"  compute   {d.compute} ({d.why})", ""]
    lines += ["rows (after the row checks)", *(f"  {split:<11} {n:>6}" for split, n in r.rows.items())]
    lines += [f"  note      {note}" for note in r.notes]
    max_length = next(iter(r.tokens.values())).max_length
    lines += ["", f"tokens per row (data.max_length {max_length}): prompt | prompt + the longer answer",
              f"  {'split':<11} {'rows':>6} {'min':>11} {'median':>15} {'p95':>11} {'max':>11} {'truncated':>10}"]  # fmt: skip
    for split, s in r.tokens.items():
        p = r.prompt_tokens[split]
        lines.append(f"  {split:<11} {s.rows:>6} {p.min:>5} | {s.min:<3} {p.median:>7g} | {s.median:<5g} "
                     f"{p.p95:>5} | {s.p95:<3} {p.max:>5} | {s.max:<3} {s.truncated:>10}")  # fmt: skip
    m, t = r.memory, r.time
    lines += ["", f"memory (measured: {m.how})", f"  peak      {m.peak_bytes / GIB:.2f} GiB of {d.memory_total / GIB:.1f}"
              f" GiB ({d.memory_available / GIB:.1f} GiB available now); the longest row {m.tokens} tokens"]  # fmt: skip
    lines += ["", f"time (measured: {t.steps} optimizer steps, the first on the longest rows and not timed, then"
              f" {t.sampled_rows} sampled rows; one process)",
              f"  per step   {t.seconds_per_step:>8.2f} s",
              f"  per epoch  {duration(t.epoch_seconds):>10}    ({t.steps_per_epoch} steps)",
              f"  this run   {duration(t.run_seconds):>10}    ({t.run})"]  # fmt: skip
    if r.warnings:
        lines += ["", *(f"warning: {w}" for w in r.warnings)]
    problems = len(r.errors)
    verdict = f"{problems} problem{'s' * (problems != 1)} (below)" if problems else "no problems"
    return [*lines, "", f"doctor: {verdict}, {len(r.warnings)} warning{'s' * (len(r.warnings) != 1)}"]
