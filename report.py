"""
report.py - evaluate.py's report as Markdown tables and figures (and reproduce.py's table cells).

No paper section of its own: it renders what evaluate.py measured (HCX §4.3's win rates with
their intervals, SELF-JUDGE's judge accuracy and self-rejection curve, ...). Everything here reads
a report dict (report.json's content) and computes nothing new, so a report can be re-rendered from
its JSON alone:
  win_cell, md_table, keyed_table, section        Markdown building blocks
  TABLES                                          {key: header} of each table's columns
  summary_table, onpolicy_markdown, to_markdown   the report's text
  plot_figures                                    loss curves and the N-curve (with matplotlib)
  write_report                                    report.json, report.md and figures, crash-safe
  format_accuracy, report_heldout                 a judge's held-out accuracy as text and JSON
                                                  (jsft.py's judge_eval.json, reward_model.py's)
  data_summary                                    data.py's build table (from its meta.json)
  tokenizer_table                                 tokenizer.py's efficiency report as text

Use (a module, not a script):
  import json, report
  print(report.to_markdown(json.load(open("out/eval/report.json"))))
"""

import json
import os

from readers import atomic_write


# ------------------------------------------------------------------ Markdown
def win_cell(win):
    """'0.543 [0.521, 0.566] *': a paired win rate, its 95 % interval, * when the interval excludes
    0.5."""
    if not win:
        return "-"
    lo, hi = win["ci"]
    return f"{win['win_rate']:.3f} [{lo:.3f}, {hi:.3f}]" + (" *" if win["significant"] else "")


def diff_cell(diff, ci):
    """'+0.011 [+0.002, +0.020] *': a paired difference, its 95 % interval, * when the interval
    excludes 0."""
    if ci is None:
        return "-"
    return f"{diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" + (" *" if ci[0] > 0 or ci[1] < 0 else "")


def fmt(x):
    if isinstance(x, float):
        return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3f}"
    return "-" if x is None else str(x)


def md_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows])


def keyed_table(lead, columns, rows, optional=()):
    """md_table of rows that are dicts: lead, the headers of the columns that name a row; columns,
    {key: header} of the cells read from its dict; rows, (naming cells, dict) pairs. A key in
    optional may be missing (an empty cell, "-"); any other must be there."""
    return md_table(
        lead + list(columns.values()),
        [list(names) + [d.get(k) if k in optional else d[k] for k in columns] for names, d in rows],
    )


def section(title, table, *notes):
    """A report section: its heading, its table, then paragraphs, each followed by a blank line."""
    return [f"## {title}", "", table, ""] + [line for note in notes for line in (note, "")]


SUMMARY_HEADERS = {
    "checkpoint": "checkpoint",
    "val_bpb": "val bpb",
    "overall": "greedy overall",
    "sampled_overall": "sampled overall",
    "sampled_correct": "sampled correct",
    "win_vs_baseline": "win vs baseline [95% CI]",
    "win_vs_start": "win vs start [95% CI]",
    "log_ratio": "KL to start",
    "changed_greedy": "changed greedy",
    "judge_acc": "judge acc",
    "params_held": "params held",
    "step_s": "s / step",
}


def summary_table(report):
    def cell(k, v):
        if k.startswith("win_"):
            return win_cell(v)
        return f"{v / 1e6:.1f}M" if k == "params_held" and v else v

    rows = [[cell(k, v) for k, v in r.items()] for r in report["summary"]]
    return md_table(list(SUMMARY_HEADERS.values()), rows)


def first(section):
    return next(iter(section.values()))


# a judge's accuracy in each order, and how often the two orders agree
ORDERS = {
    "acc_first_order": "first order",
    "acc_second_order": "second order",
    "consistency": "consistency",
}
TABLES = {  # {key: header} of each table's cells read from a report dict, in column order
    "checkpoints": {
        "path": "path",
        "phase": "phase",
        "step": "step",
        "params": "parameters",
        "vocab_size": "vocabulary",
    },
    "fim": {"exact": "exact", "prefix": "prefix", "n": "n"},
    "win_rates": {
        "win_rate": "win rate",
        "wins": "W",
        "ties": "T",
        "losses": "L",
        "first_order_win_rate": "first order",
        "second_order_win_rate": "second order",
        "n_judgments": "judgments",
    },
    "judge": {
        "acc": "accuracy (both orders)",
        "acc_chosen_first": "chosen shown first",
        "acc_chosen_second": "chosen shown second",
        "consistency": "consistency",
        "n": "n",
    },
    "rejection": {
        "n": "N",
        "overall": "overall",
        "gain": "gain over N=1 [95% CI]",
        "correct_share": "correct",
        "oracle_overall": "oracle best-of-N overall",
        "oracle_correct_share": "oracle correct",
    },
    "rejection_rm": {
        "reward_model_overall": "reward model best-of-N overall",
        "reward_model_correct_share": "reward model correct",
    },
    "onpolicy": {
        "n_pairs": "pairs",
        "identical_share": "identical",
        "tie_share": "verifier ties",
        "n_judged": "judged",
        "acc": "accuracy (both orders)",
        **ORDERS,
    },
    "by_difference": {
        "n": "pairs",
        "acc": "accuracy (both orders)",
        **ORDERS,
        "names_first": "names first",
    },
    "other_judges": {
        "acc": "accuracy",
        "correctness_acc": "on correctness pairs",
        "surface_acc": "on surface pairs",
        **ORDERS,
    },
}


def family_table(fams):
    """The judge's correctness pairs by task family as a table: fams {family: {"n", "acc",
    "consistency", "names_first", "sampled_correct", and "<judge>_acc" per other judge}}."""
    judges = sorted({k for b in fams.values() for k in b if k.endswith("_acc")})

    def cell(v):
        return "-" if v is None else f"{v:.3f}"

    return md_table(
        ["family", "sampled correct", "pairs", "accuracy", "consistency", "names first"]
        + [k.replace("_acc", " accuracy") for k in judges],
        [
            [f, cell(b.get("sampled_correct")), b["n"]]
            + [cell(b.get(k)) for k in ("acc", "consistency", "names_first", *judges)]
            for f, b in fams.items()
        ],
    )


def onpolicy_markdown(op):
    """The report section of `onpolicy_judge`'s result (with its "policy")."""
    out = section(
        f"The judge on on-policy pairs: `{op['policy']}` samples two replies per "
        "held-out prompt and judges them itself",
        keyed_table([], TABLES["onpolicy"], [([], op)], optional=("acc", *ORDERS)),
        "Pairs the verifier ties are what SELF-JUDGE cannot learn from (left out of its "
        "loss when the samples are identical); accuracy is against the verifier on the "
        "rest. Mean verifier scores of the samples: "
        + ", ".join(f"{k} {v:.3f}" for k, v in op["sample_scores"].items()),
    )
    if op.get("by_difference"):
        rows = [
            ([k], v)
            for k, v in [("all", op)] + list(op["by_difference"].items())
            if v.get("acc") is not None
        ]
        out += [
            "By what separates the pair (the verifier's correctness, or only surface "
            "principles: language, concision, ending). Names first: the share of single-order "
            "verdicts naming the reply shown first; 0.5 is no position prior, and a judge that "
            "cannot tell a pair apart falls back on it (consistency 0 when it always names the "
            "same position):",
            "",
            keyed_table(["separated by"], TABLES["by_difference"], rows),
            "",
        ]
    if op.get("correctness_by_family"):
        others = op.get("others") or {}
        flat = {
            f: dict(
                b,
                sampled_correct=op["sampled_correct_by_family"].get(f),
                **{
                    f"{n}_acc": x["acc"]
                    for n, o in others.items()
                    if (x := o.get("correctness_by_family", {}).get(f))
                },
            )
            for f, b in op["correctness_by_family"].items()
        }
        out += [
            "The pairs that differ in correctness, by task family (most pairs first), beside the "
            "policy's correct share over all its samples in the family: a family it cannot solve "
            "gives few such pairs, and a judge that reads no answer falls back on position there"
            + (" (the other judges' accuracy on the same pairs last)" if others else "")
            + ":",
            "",
            family_table(flat),
            "",
        ]
    if op.get("others"):
        judges = [(op["policy"] + " (self)", op)] + list(op["others"].items())
        rows = [
            ([n], dict(v, **{f"{k}_acc": b["acc"] for k, b in v.get("by_difference", {}).items()}))
            for n, v in judges
        ]
        out += [
            "The same judged pairs, other judges. A reward model, and the policy's own likelihood "
            "(it picks the reply it finds likelier, no judging prompt: what its distribution "
            "knows about the pair), read no order: consistency 1 by construction:",
            "",
            keyed_table(
                ["judge"], TABLES["other_judges"], rows, optional=("correctness_acc", "surface_acc")
            ),
            "",
        ]
    return out


SUMMARY_NOTE = (
    "Scores and win rates are the verifier's on {samples} replies sampled per held-out prompt "
    "(T=1, top-p 0.9, the same random numbers for every checkpoint); a win rate is against "
    "`{baseline}` or the checkpoint's own start (the one it was trained from): per prompt the mean "
    "of its verdicts (sample j against the other's sample j: 1 / 0.5 / 0), with a paired bootstrap "
    "95 % interval over prompts; * marks an interval that excludes "
    "0.5. KL to start: mean log p(reply) - log p_start(reply) over the checkpoint's own samples "
    "(nats per reply); changed greedy: share of prompts whose greedy reply differs from the "
    "start's. Cost: the parameters held in memory while the checkpoint trained (policy, and for a "
    "preference stage its reference and its judge: SELF-JUDGE's judge is its reference, a reward "
    "model is a third network) and the median wall time of one optimizer step."
)


def to_markdown(report, figures=()):
    r, meta = report, report["meta"]
    out = [
        "# minihcx evaluation report",
        "",
        f"{meta['machine']}, device {meta['device']}, torch {meta['torch']}; "
        f"{meta['seconds']['total']} s",
        "",
    ]
    out += section(
        "Summary",
        summary_table(r),
        SUMMARY_NOTE.format(samples=meta["config"]["samples"], baseline=r["win_rates"]["baseline"]),
    )
    out += section(
        "Checkpoints",
        keyed_table(
            ["name"],
            TABLES["checkpoints"],
            [
                ([n], {**c, "params": f"{c['params'] / 1e6:.2f}M"})
                for n, c in r["checkpoints"].items()
            ],
        ),
    )
    if r["lm"]:
        cells = [(g, k) for g in first(r["lm"]) for k in ("loss", "bpb")]
        cols = {f"{g} {k}": f"{g} {k}" for g, k in cells}
        rows = [([n], {f"{g} {k}": v[g][k] for g, k in cells}) for n, v in r["lm"].items()]
        out += section(
            "Language modelling (validation loss in nats/token, bits per byte)",
            keyed_table(["checkpoint"], cols, rows),
        )
    if r["tokenizer"]:
        table = r["tokenizer"]["mean_tokens_per_document"]
        langs = sorted({lang for row in table.values() for lang in row})
        out += section(
            "Tokenizer efficiency (mean tokens per held-out document, HCX Table 1)",
            keyed_table(
                ["tokenizer"],
                {x: x for x in langs},
                [([n], row) for n, row in table.items()],
                optional=langs,
            ),
        )
        out += [
            f"{n}: {share:.1%} of Korean morpheme boundaries fall inside a token"
            for n, share in r["tokenizer"].get("ko_morpheme_boundaries_inside_a_token", {}).items()
        ] + [""]
    if any(r["fim"].values()):
        rows = [([n, g], v) for n, gs in r["fim"].items() for g, v in gs.items()]
        out += section(
            "Fill-in-the-middle (greedy middles of held-out windows cut at thirds)",
            keyed_table(["checkpoint", "group"], TABLES["fim"], rows),
            "exact: the middle and then eos; prefix: the share of the middle's leading "
            "characters reproduced.",
        )
    if r["mc"]:
        files = list(first(r["mc"]))
        rows = [
            ([n], {f: f"{v[f]['accuracy']:.3f} / {v[f]['p_correct']:.3f}" for f in files})
            for n, v in r["mc"].items()
        ]
        out += section(
            "Multiple choice (accuracy / mean probability of the right letter)",
            keyed_table(["checkpoint"], {f: f for f in files}, rows),
            "Chance: "
            + ", ".join(
                f"{f} {v['chance']:.3f} (n={v['n']}, letters {v['letter_tokens']})"
                for f, v in first(r["mc"]).items()
            ),
        )
    if r["tasks"]:
        principles = [
            k for k, v in first(r["tasks"]).items() if isinstance(v, float) and k != "correct_share"
        ]
        cols = {**{p: p for p in principles}, "correct_share": "correct", "n": "n"}
        out += section(
            "Held-out tasks, scored by the verifier",
            keyed_table(["checkpoint"], cols, [([n], v) for n, v in r["tasks"].items()]),
        )
        for key in ("per_lang", "per_family"):
            cells = list(first(r["tasks"])[key])
            rows = [([n], {c: v[key][c]["overall"] for c in cells}) for n, v in r["tasks"].items()]
            out += [
                f"Overall score {key.replace('_', ' ')}:",
                "",
                keyed_table(["checkpoint"], {c: c for c in cells}, rows),
                "",
            ]
    for by in ("verifier", "judge"):
        if r["win_rates"][by]:
            title = (
                "the task verifier"
                if by == "verifier"
                else f"the judge `{r['win_rates'].get('judge_ckpt')}`"
            )
            out += section(
                f"Win rates vs `{r['win_rates']['baseline']}`, judged by {title}",
                keyed_table(
                    ["checkpoint"],
                    TABLES["win_rates"],
                    [([n], v) for n, v in r["win_rates"][by].items()],
                ),
            )
    if r["judge"]:
        rows = [
            ([n, lang], v)
            for n, j in r["judge"].items()
            for lang, v in [("all", j)] + list(j["by_lang"].items())
        ]
        out += section(
            "Judge accuracy on held-out preference pairs (SELF-JUDGE)",
            keyed_table(["checkpoint", "language"], TABLES["judge"], rows),
            "Consistency: the share of pairs whose verdict survives swapping the two replies.",
        )
    if r.get("onpolicy_judge"):
        out += onpolicy_markdown(r["onpolicy_judge"])
    if r["rejection"]:
        rj = r["rejection"]
        cols = {
            **TABLES["rejection"],
            **(TABLES["rejection_rm"] if "reward_model_overall" in rj["curve"][0] else {}),
        }
        out += section(
            f"Self-rejection: `{rj['policy']}` samples N replies, `{rj['judge']}` picks "
            f"one by knockout ({rj['n_prompts']} prompts)",
            keyed_table(
                [],
                cols,
                [
                    ([], dict(c, gain=diff_cell(c.get("gain_vs_1"), c.get("gain_vs_1_ci"))))
                    for c in rj["curve"]
                ],
            ),
            "Every sample counts at every N: a point is the mean over the disjoint "
            "groups of N samples of each group's knockout winner; the gain is paired by "
            "prompt.",
        )
    out += [f"![{f}]({f})\n" for f in figures]
    out += section(
        "Wall time per section (s)",
        md_table(list(meta["seconds"]), [list(meta["seconds"].values())]),
    )
    if r["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    return "\n".join(out)


def plot_figures(report, out_dir):
    """Loss curves of every checkpoint and the self-rejection N-curve, when matplotlib is
    installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    curves = {n: c for n, c in report["loss_curves"].items() if c and c["step"]}
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
        for ax, (name, c) in zip(axes[0], curves.items()):
            ax.plot(c["step"], c["loss"], label="train")
            if c["val_step"]:
                ax.plot(c["val_step"], c["val_loss"], "o-", label="val")
            ax.set(title=name, xlabel="step", ylabel="loss")
            ax.legend()
        written.append(save_figure(fig, out_dir, "loss_curves.png"))
    if report["rejection"]:
        rj = report["rejection"]
        ns = [c["n"] for c in rj["curve"]]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(
            ns,
            [c["overall"] for c in rj["curve"]],
            "o-",
            label=f"knockout winner ({rj['judge']} judges)",
        )
        ax.plot(
            ns,
            [c["oracle_overall"] for c in rj["curve"]],
            "s--",
            label="oracle best of N (the verifier picks)",
        )
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set(
            xlabel="N samples",
            ylabel="verifier overall score",
            title=f"self-rejection: {rj['policy']}",
        )
        ax.legend()
        written.append(save_figure(fig, out_dir, "rejection_curve.png"))
    plt.close("all")
    return written


def save_figure(fig, out_dir, name):
    fig.tight_layout()
    atomic_write(os.path.join(out_dir, name), lambda path: fig.savefig(path, dpi=100, format="png"))
    return name


def write_report(report, out_dir):
    """Plots, report.json (every figure) and report.md, each written to a temporary name and
    renamed."""
    os.makedirs(out_dir, exist_ok=True)
    figures = plot_figures(report, out_dir)
    texts = {
        "report.json": json.dumps(report, indent=1, ensure_ascii=False),
        # both rendered before either file is touched
        "report.md": to_markdown(report, figures),
    }
    for name, text in texts.items():
        atomic_write(os.path.join(out_dir, name), text)


# ------------------------------------------------------------------ held-out judge accuracy
def format_accuracy(result):
    """judge_accuracy's result as lines; a judge that reads no order (a reward model: "order_free")
    shows its accuracy alone, its per-order figures being equal by construction."""

    def line(r):
        if r.get("order_free"):
            return f"acc {r['acc']:.1%}, n={r['n']}"
        return (
            f"acc {r['acc']:.1%} (chosen first {r['acc_chosen_first']:.1%}, "
            f"second {r['acc_chosen_second']:.1%}), consistency {r['consistency']:.1%}, n={r['n']}"
        )

    return "\n".join(
        [f"judge accuracy: {line(result)}"]
        + [f"  {g}: {line(r)}" for g, r in result["by_lang"].items()]
    )


def report_heldout(result, eval_path, out_file, log=print):
    """Print a judge's accuracy on held-out pairs (judge_accuracy's keys) and write it to out_file
    (jsft.py's judge_eval.json, reward_model.py's rm_eval.json), naming the pairs' file."""
    log(f"held-out pairs: {eval_path}\n" + format_accuracy(result))
    atomic_write(out_file, json.dumps(dict(result, eval_prefs=eval_path), indent=2))


# ------------------------------------------------------------------ data.py's build
def data_summary(meta):
    """What data.py prints at the end of a build (meta: meta.json): the per-source and per-group
    table, the malformed records it skipped, the files it wrote."""
    rows = [
        f"{'source':22} {'group':5} {'docs in':>7} {'short':>5} {'rep':>4} {'exact':>5} "
        f"{'near':>4} {'kept':>5} {'MB':>6} {'up':>4} {'train tok':>10} {'pii e/p':>8}"
    ]
    for name, s in meta["sources"].items():
        f = s["filters"]
        rows.append(
            f"{name:22} {s['group']:5} {s['docs_in']:7} {f['too_short']:5} "
            f"{f['repetitive']:4} {f['exact_dup']:5} {f['near_dup']:4} {s['docs_kept']:5} "
            f"{s['chars'] / 1e6:6.2f} {s['upsample']:4.1f} {s['train_tokens']:10,} "
            f"{f['emails']:>4}/{f['phones']:<3}"
        )
    rows.append("")
    rows.append(
        f"{'group':6} {'target':>7} {'share':>7} {'train tok':>10} {'epochs':>6} "
        f"{'val docs':>8} {'val tok':>8} {'val bytes':>9}"
    )
    for g, m in meta["mixture"].items():
        v = meta["val"]["groups"].get(g, {"docs": 0, "tokens": 0, "bytes": 0})
        rows.append(
            f"{g:6} {m['target_share']:7.1%} {m['share']:7.1%} {m['tokens']:10,} "
            f"{m['epochs']:6.2f} {v['docs']:8} {v['tokens']:8,} {v['bytes']:9,}"
        )
    fim = meta["fim"]
    rows.append(
        f"\ntrain: {meta['train']['tokens']:,} tokens in {meta['train']['docs']:,} "
        f"documents (FIM rate {fim['rate']}, SPM {fim['spm_rate']}, {fim['split']}: "
        f"{fim['docs']}); val: {meta['val']['tokens']:,} tokens; "
        f"{meta['dtype']}, vocab {meta['vocab_size']}; {meta['seconds']} s"
    )
    skipped = meta["skipped_records"]
    if skipped:
        rows.append(
            f"skipped {len(skipped)} malformed record(s) (--skip-bad): "
            + "; ".join(skipped[:10])
            + (" .." if len(skipped) > 10 else "")
        )
    vals = ",".join("val_" + g for g in meta["val"]["groups"])
    rows.append(f"wrote {meta['config']['out_dir']}/{{train,val,{vals}}}.bin and meta.json")
    return "\n".join(rows)


def tokenizer_table(report):
    """tokenizer.py's efficiency report (its report.json) as the text it prints."""
    rows = report["mean_tokens_per_document"]
    langs = sorted({lang for r in rows.values() for lang in r})
    lines = [
        f"mean tokens per held-out document (vocab {report['vocab_size']}, "
        f"held-out docs {report['heldout_documents']})",
        f"{'tokenizer':<22}" + "".join(f"{lang:>10}" for lang in langs),
    ]
    for name, r in rows.items():
        lines.append(
            f"{name:<22}" + "".join(f"{r.get(lang, float('nan')):>10.1f}" for lang in langs)
        )
    for name, share in report.get("ko_morpheme_boundaries_inside_a_token", {}).items():
        lines.append(f"{name}: {share:.1%} of Korean morpheme boundaries fall inside a token")
    return "\n".join(lines)
