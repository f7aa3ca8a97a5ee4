"""reproduce.py: one table over several seeds of the pipeline (`make reproduce` writes the reports).

The claims of SELF-JUDGE (Lee et al., ACL 2024, §4: on-policy self-judgment beats its start, SFT and
offline DPO) are comparisons between arms on the same held-out prompts. One run is one draw: this
script pools the runs of `evaluate.py` over seeds and answers "would a second run give the same
ordering?". Per arm and comparison (vs the baseline, vs the arm's own start):
  mean and spread   the win rate of each seed, their mean, min and max;
  pooled interval   per prompt the outcome averaged over seeds, then a paired bootstrap over prompts
                    (seeds share the held-out prompts, so the pairing holds);
  ordering          the arms ranked by sampled verifier score, per seed, and whether the seeds agree.
Also pooled: the judge's accuracy on on-policy pairs, the share of verifier ties, each stage's
movement (KL to start, changed replies).

    python reproduce.py out/reproduce/seed*/eval/report.json            # -> out/reproduce/table.md, .json
"""
import argparse
import json
import os
import sys

from evaluate import bootstrap_interval, mean, md_table, win_cell
from pretrain import atomic_write


def read_reports(paths):
    reports = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                reports.append(json.load(fh))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: cannot read an evaluate.py report ({e}); run `make reproduce`")
    return reports


def pooled_win(rows, seed=0):
    """rows: one paired_win dict per seed (with "outcomes") -> per-seed rates and the pooled interval."""
    lengths = {len(r["outcomes"]) for r in rows}
    if len(lengths) != 1:
        raise SystemExit(f"the reports judged different numbers of prompts ({sorted(lengths)}): "
                         "pooling needs the same held-out prompts in every seed")
    per_prompt = [mean(o) for o in zip(*(r["outcomes"] for r in rows))]
    ci = bootstrap_interval(per_prompt, seed)
    rates = [r["win_rate"] for r in rows]
    return {"win_rate": mean(per_prompt), "ci": ci, "per_seed": rates, "min": min(rates), "max": max(rates),
            "significant": ci[0] > 0.5 or ci[1] < 0.5, "n_prompts": len(per_prompt), "n_seeds": len(rows)}


def pool(reports):
    arms = [a for a in reports[0]["checkpoints"] if all(a in r["checkpoints"] for r in reports)]
    table = {}
    for arm in arms:
        sampled = [r["tasks"].get(arm, {}).get("sampled", {}).get("overall") for r in reports]
        row = {"sampled_overall": sampled, "start": reports[0]["checkpoints"][arm].get("start")}
        for key in ("vs_baseline", "vs_start"):
            rows = [r["win_rates"]["sampled"].get(arm, {}).get(key) for r in reports]
            if all(rows):
                row[key] = pooled_win(rows)
        moves = [r["movement"].get(arm) for r in reports]
        if all(moves):
            row["log_ratio"] = mean(m["log_ratio"] for m in moves)
            row["changed_greedy"] = mean(m["changed_greedy"] for m in moves)
        table[arm] = row
    ranked = [sorted((a for a in arms if table[a]["sampled_overall"][i] is not None),
                     key=lambda a: -table[a]["sampled_overall"][i]) for i in range(len(reports))]
    onpolicy = [r.get("onpolicy_judge") for r in reports]
    onpolicy = {k: mean(o[k] for o in onpolicy) for k in ("tie_share", "identical_share", "acc", "consistency",
                                                          "acc_first_order", "acc_second_order")
                if all(o and o.get(k) is not None for o in onpolicy)}
    return {"arms": table, "orderings": ranked, "same_ordering": all(r == ranked[0] for r in ranked),
            "onpolicy_judge": onpolicy, "baseline": reports[0]["win_rates"]["baseline"], "n_seeds": len(reports)}


def to_markdown(pooled):
    def spread(xs):
        xs = [x for x in xs if x is not None]
        return f"{mean(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})" if xs else "-"

    def seeds(win):
        return " / ".join(f"{x:.3f}" for x in win["per_seed"]) if win else "-"
    rows = [[arm, row["start"] or "-", spread(row["sampled_overall"]),
             win_cell(row.get("vs_baseline")), seeds(row.get("vs_baseline")),
             win_cell(row.get("vs_start")), seeds(row.get("vs_start")),
             row.get("log_ratio"), row.get("changed_greedy")] for arm, row in pooled["arms"].items()]
    out = [f"# minihcx: {pooled['n_seeds']} seeds pooled", "",
           md_table(["arm", "start", "sampled overall: mean (min-max)", f"win vs {pooled['baseline']} pooled [95% CI]",
                     "per seed", "win vs start pooled [95% CI]", "per seed", "KL to start", "changed greedy"], rows),
           "", "Pooled: per held-out prompt the outcome averaged over seeds, then a paired bootstrap over prompts; "
           "* marks an interval that excludes 0.5.", "",
           "Ordering by sampled verifier score, per seed: " + "; ".join(" > ".join(r) for r in pooled["orderings"]),
           f"Would a second run give the same ordering? {'yes' if pooled['same_ordering'] else 'no'}: the "
           f"{pooled['n_seeds']} seeds {'agree' if pooled['same_ordering'] else 'disagree'} on the full ranking.", ""]
    if pooled["onpolicy_judge"]:
        out += ["On-policy pairs of the SELF-JUDGE start (mean over seeds): " +
                ", ".join(f"{k} {v:.3f}" for k, v in pooled["onpolicy_judge"].items()), ""]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="report.json files written by evaluate.py, one per seed")
    parser.add_argument("--out-dir", default="out/reproduce", help="where table.md and table.json go")
    args = parser.parse_args(argv)
    pooled = pool(read_reports(args.reports))
    pooled["reports"] = args.reports
    os.makedirs(args.out_dir, exist_ok=True)
    text = to_markdown(pooled)
    atomic_write(os.path.join(args.out_dir, "table.json"), json.dumps(pooled, indent=1))
    atomic_write(os.path.join(args.out_dir, "table.md"), text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
