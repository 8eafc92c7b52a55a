"""A readable Markdown rendering of an `EvaluationReport` (the JSON is for machines, this is for people)."""

from __future__ import annotations

from kdsl.agents.evaluation import EvaluationReport


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: EvaluationReport, *, max_confusion: int = 30) -> str:
    """Overall and per-task tables, paired comparisons, per-class F1 and confusion matrices."""
    tasks = list(report.n)
    out = [f"# Evaluation of decider `{report.decider}` on {report.data} ({report.part})", ""]
    out += [f"Samples: {', '.join(f'{t} {report.n[t]}' for t in tasks)}. Rules: "
            f"{', '.join(f'{t} {report.n_rules.get(t, 0)}' for t in tasks)}. Temperatures: "
            f"{', '.join(f'{t} {v:.2f}' for t, v in report.temperatures.items())}. Stacking weights: "
            f"{', '.join(f'{t} {v:g}' for t, v in report.stack_weights.items()) or 'none'}.", ""]
    out += ["## Weighted F1", "", "| mode | " + " | ".join(tasks) + " | overall |",
            "|---|" + "---|" * (len(tasks) + 1)]
    for mode in report.modes:
        row = [f"{report.result(mode, t).scores.weighted_f1:.4f}" for t in tasks]
        out.append(f"| {mode} | " + " | ".join(row) + f" | {report.overall[mode]:.4f} |")
    out += ["", "Overall is the mean of the tasks' weighted F1.", "", "## All metrics", "",
            "| task | mode | accuracy | weighted F1 | macro F1 | coverage | sources |", "|---|---|---|---|---|---|---|"]
    for t in tasks:
        for mode in report.modes:
            r = report.result(mode, t)
            src = ", ".join(f"{k} {v}" for k, v in sorted(r.sources.items()))
            out.append(f"| {t} | {mode} | {r.scores.accuracy:.4f} | {r.scores.weighted_f1:.4f} | "
                       f"{r.scores.macro_f1:.4f} | {r.scores.coverage:.3f} | {src} |")
    out += ["", "## Paired bootstrap (weighted F1, 95% CI)", "", "| task | A | B | A | B | A - B | CI | P(A <= B) |",
            "|---|---|---|---|---|---|---|---|"]
    for c in report.comparisons:
        b = c.bootstrap
        out.append(f"| {c.task} | {c.a} | {c.b} | {b.a:.4f} | {b.b:.4f} | {b.delta:+.4f} | "
                   f"[{b.low:+.4f}, {b.high:+.4f}] | {b.p_a_not_better:.3f} |")
    for t in tasks:
        for mode in report.modes:
            r = report.result(mode, t)
            out += ["", f"## {t}: {mode}", "", "| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            out += [f"| {_cell(c.label)} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support} |"
                    for c in r.per_class]
            if len(r.confusion_labels) <= max_confusion:
                out += ["", "Confusion (rows gold, columns predicted; labels in the order above):", ""]
                out += ["| gold \\ pred | " + " | ".join(str(i) for i in range(len(r.confusion_labels))) + " |",
                        "|---|" + "---|" * len(r.confusion_labels)]
                out += [f"| {i} {_cell(lab)} | " + " | ".join(str(x) for x in row) + " |"
                        for i, (lab, row) in enumerate(zip(r.confusion_labels, r.confusion, strict=True))]
    return "\n".join(out) + "\n"
