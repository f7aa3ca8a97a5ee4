"""The demo's own path (Makefile targets, every script's CLI, the chained out/ folders) at toy size:
tokenizer -> tasks -> data -> pretrain -> SFT -> JSFT -> DPO -> reward model -> its on-policy arm ->
SELF-JUDGE -> oracle arm -> evaluate."""

import json
import math
import os
import shlex
import subprocess
import sys

from conftest import report_numbers
from model import ModelConfig, Transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE = {
    "TOKENIZER_ARGS": "--vocab-size 1200 --max-train-chars 400000",
    "TASKS_ARGS": "--n-train 12 --n-eval 3",
    "DATA_ARGS": "--code-chars 60000",
    "PRETRAIN_ARGS": "--preset tiny --steps 12 --batch-size 4 --seq-len 128 --short-seq-len 64 "
    "--eval-batches 2",
    "SFT_ARGS": "--steps 6 --seq-len 128 --max-tokens 1024",
    "JSFT_ARGS": "--steps 6 --seq-len 128 --max-tokens 1024 --eval-batch-size 16",
    "DPO_ARGS": "--steps 2 --batch-size 4",
    "RM_ARGS": "--steps 2 --batch-size 4 --seq-len 128",
    "SELF_JUDGE_ARGS": "--steps 2 --batch-size 4 --max-new-tokens 12 --val-count 4",
    "EVAL_ARGS": "--max-val-tokens 256 --max-tasks 11 --max-judge-pairs 8 --fim-examples 3 "
    "--max-new-tokens 12 --rejection-prompts 3 --rejection-max-n 4 --batch-size 16",
}


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_whole_pipeline_smoke(tmp_path):
    out = tmp_path / "out"
    args = [
        "make",
        "--no-print-directory",
        "-C",
        ROOT,
        "pipeline",
        f"OUT={out}",
        f"PY={sys.executable}",
    ]
    args += [f"{k}={v}" for k, v in SMOKE.items()]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="2")
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in (
        "tokenizer",
        "tasks",
        "data",
        "pretrain",
        "sft",
        "jsft",
        "dpo",
        "reward_model",
        "onpolicy_rm",
        "self_judge",
        "oracle",
        "eval",
    ):
        assert (out / stage / ".done").exists(), stage
    for ckpt in (
        "pretrain",
        "sft",
        "jsft",
        "dpo",
        "reward_model",
        "onpolicy_rm",
        "self_judge",
        "oracle",
    ):
        config = json.load(open(out / ckpt / "config.json"))
        assert config["phase"] in (ckpt, "self_judge", "dpo"), config["phase"]
        judged_by = {"oracle": "verifier", "self_judge": "self", "onpolicy_rm": "reward"}.get(ckpt)
        assert config.get("judged_by") == judged_by
        assert (out / ckpt / "tokenizer.model").exists() and (out / ckpt / "metrics.jsonl").exists()
    report = json.load(open(out / "eval" / "report.json"))
    held = {n: c["params_held"] for n, c in report["checkpoints"].items()}  # the cost column
    rm_config = json.load(open(out / "reward_model" / "config.json"))["model"]
    rm_params = Transformer(ModelConfig(**rm_config)).num_params()
    assert (
        held["sft"] == report["checkpoints"]["sft"]["params"]
        and held["self_judge"] == 2 * held["sft"]
    )
    assert held["onpolicy_rm"] == 2 * held["sft"] + rm_params and rm_params < held["sft"]
    assert (out / "eval" / "report.md").exists()
    numbers = list(report_numbers(report))
    assert numbers and all(
        math.isfinite(v) for _, v in numbers if not (isinstance(v, float) and math.isnan(v))
    )
    rates = [(p, v) for p, v in numbers if p.endswith("win_rate")]
    assert rates and all(0.0 <= v <= 1.0 for _, v in rates), rates
    for by in report["win_rates"].values():  # both orders counted: two judgments per prompt
        for row in by.values() if isinstance(by, dict) else []:
            if isinstance(row, dict) and "n_prompts" in row:
                assert row["n_judgments"] == 2 * row["n_prompts"]
                assert row["wins"] + row["ties"] + row["losses"] == row["n_prompts"]
    # the stdout table and the per-stage wall times come last
    assert "wall time per stage" in proc.stdout


def planned(*make_args):
    """The commands `make -n` would run (nothing runs), one per line."""
    args = ["make", "-n", "--no-print-directory", "-C", ROOT, *make_args, f"PY={sys.executable}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()


def commands_of(lines, script):
    """The arguments (shell words) of every planned command that runs `script`."""
    words = [shlex.split(line.split("&&")[0]) for line in lines if f" {script} " in line]
    return [w[w.index(script) + 1 :] for w in words]


def command_of(lines, script):
    found = commands_of(lines, script)
    assert len(found) == 1, (script, found)
    return found[0]


def test_demo_runs_at_its_own_scale_and_reproduce_does_not(tmp_path):
    from pretrain import PretrainConfig, parse_config
    from sft import SFTConfig

    demo = planned("demo", f"OUT={tmp_path}/d", "SETUP=", "SFT_ARGS=--steps 7")
    steps = {
        s: parse_config(c, command_of(demo, s)).steps  # the last --steps wins
        for s, c in (("pretrain.py", PretrainConfig), ("sft.py", SFTConfig))
    }
    assert steps == {"pretrain.py": 160, "sft.py": 7}
    assert "--max-tasks 88" in " ".join(command_of(demo, "evaluate.py"))
    # SFT and JSFT mix in the pretraining text of this run's own data.py folder, not out/data
    from jsft import JSFTConfig

    for script, config in (("sft.py", SFTConfig), ("jsft.py", JSFTConfig)):
        cfg = parse_config(config, command_of(demo, script))
        assert cfg.lm_mix > 0 and cfg.lm_data == f"{tmp_path}/d/data", script
    # reproduce: the scripts' own defaults, its shared base apart from the demo's folders
    repro = planned("reproduce", f"OUT={tmp_path}/r", "SETUP=")
    assert f"OUT={tmp_path}/r/reproduce/base" in " ".join(repro)
    assert not any("--steps" in line for line in repro)
    # the base is one process with every core; the seeds then run at once, one thread per stage
    seeds = [line for line in repro if "seed1/eval/.done" in line and "seed3/eval/.done" in line]
    assert len(seeds) == 1 and seeds[0].startswith("OMP_NUM_THREADS=1 ") and " -j3 " in seeds[0]
    assert not any("OMP_NUM_THREADS" in line for line in repro if "base/pretrain/.done" in line)
    # evaluate.py measures the judges on the held-out pairs; JSFT and the reward model do not also
    from reward_model import RewardConfig

    for script, config in (("jsft.py", JSFTConfig), ("reward_model.py", RewardConfig)):
        found = commands_of(repro, script)
        assert len(found) == 3 and all(parse_config(config, w).eval_prefs == "none" for w in found)
    # its evaluation: every held-out prompt, win rates by the verifier alone (the table's)
    from evaluate import EvalConfig

    cfgs = [parse_config(EvalConfig, w) for w in commands_of(repro, "evaluate.py")]
    assert len(cfgs) == 3 and all(c.max_tasks == 0 and c.judge_ckpt == "" for c in cfgs)
