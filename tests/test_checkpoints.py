"""Crash-safe checkpoints: kills at random instants, a failed write at every point of a save, the
save protocol's order, the folder layout and its loaders, planted pickles that must never run."""

import errno
import json
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import checkpoints
import convert
import evaluate
import pretrain
from checkpoints import find_checkpoint, load_checkpoint, save_checkpoint
from pretrain import load_model, train
from test_pretrain import cfg_for, make_get_batch, synthetic_tokens, tiny_model, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
pytestmark = pytest.mark.usefixtures("one_thread")


def published_step(run):
    return load_checkpoint(run)[1]["step"] if find_checkpoint(run) else 0


def final_weights(run):
    return load_checkpoint(run)[0]


def sleep_until_kill(run, seconds, saves, running):
    """Until a random instant: `seconds` from now, or as soon as `saves` more saves are published,
    whichever comes first (so that a machine faster than measured still cannot finish the run)."""

    def latest_step():  # `latest` names step_N, or .tmp_step_N while a rerun save is swapped in
        try:
            return int(os.readlink(os.path.join(run, "latest")).rsplit("_", 1)[1])
        except OSError:
            return 0

    start, deadline = latest_step(), time.time() + seconds
    while time.time() < deadline and latest_step() < start + saves and running():
        time.sleep(0.002)


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_clean_layout(run, last_step, saves=pretrain.TrainConfig.keep_last):
    """The last `saves` step folders, `latest` on the newest, the root links, every step's metrics
    row once, nothing else (no temporaries)."""
    names = set(os.listdir(run))
    steps = [f"step_{s:06d}" for s in range(last_step - saves + 1, last_step + 1)]
    assert names == {*steps, "latest", "model.pt", "config.json", "train_state.pt", "metrics.jsonl"}
    assert os.readlink(os.path.join(run, "latest")) == steps[-1]
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as fh:
        assert [json.loads(line)["step"] for line in fh] == list(range(1, last_step + 1))


# ----------------------------------------------------------------------------- SIGKILL, one process
def test_sigkill_at_20_random_instants_then_resume_equals_a_straight_run(tmp_path, monkeypatch):
    """Each restart is a process of its own, forked from a server that has already imported torch
    (kill_worker.run: save every step, always --resume)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, TESTS]))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["kill_worker"])
    import kill_worker

    def start(run, steps):
        p = ctx.Process(target=kill_worker.run, args=(str(run), steps))
        p.start()
        return p

    steps, straight = 40, tmp_path / "straight"
    start(tmp_path / "warm", 1).join()  # starts the fork server
    t0 = time.perf_counter()
    p = start(straight, steps)
    p.join()
    assert p.exitcode == 0
    per_step = (time.perf_counter() - t0) / steps  # the kill instants scale with this machine

    run, rng, kills, seen = tmp_path / "killed", random.Random(0), 0, [0]
    while kills < 20:
        p = start(run, steps)
        sleep_until_kill(run, rng.uniform(0, 5 * per_step), 1, lambda: p.exitcode is None)
        assert p.exitcode is None, "the run finished before 20 kills: it must be longer"
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        kills += 1
        seen.append(published_step(run))
        assert seen[-1] >= seen[-2]  # a kill never loses a completed save
    assert seen[-1] > 0, "no kill came after a completed save"
    p = start(run, steps)
    p.join()
    assert p.exitcode == 0
    assert_bitwise_equal(final_weights(straight), final_weights(run))
    assert_clean_layout(str(run), steps)


# ----------------------------------------------------------------------------- SIGKILL, torchrun
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(run, steps):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        os.path.join(TESTS, "kill_worker.py"),
        str(run),
        str(steps),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_sigkill_of_one_rank_under_torchrun_then_resume_equals_the_uninterrupted_run(tmp_path):
    steps, straight, run = 24, tmp_path / "straight", tmp_path / "killed"
    assert torchrun(straight, steps).wait(timeout=240) == 0
    per_step = (time.time() - os.path.getmtime(f"{straight}.pid0")) / steps  # pid: training starts
    rng, kills, seen = random.Random(1), 0, [0]
    while kills < 5:
        job = torchrun(run, steps)
        pids = [f"{run}.pid{r}" for r in range(2)]
        deadline = time.time() + 120
        while not all(os.path.exists(p) for p in pids) and time.time() < deadline:
            time.sleep(0.05)
        sleep_until_kill(run, rng.uniform(0, 5 * per_step), 2, lambda: job.poll() is None)
        assert job.poll() is None, "the run finished before 5 kills: it must be longer"
        victim = pids[rng.randrange(2)]
        with open(victim) as fh:
            os.kill(int(fh.read()), signal.SIGKILL)
        for p in pids:
            os.remove(p)
        try:
            assert job.wait(timeout=90) != 0
        except subprocess.TimeoutExpired:  # the survivor hung in a collective: the cluster's kill
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        kills += 1
        seen.append(published_step(run))
        assert seen[-1] >= seen[-2]
    assert 0 < seen[-1] < steps, "the kills must land in the middle of the run"
    assert torchrun(run, steps).wait(timeout=240) == 0
    assert_bitwise_equal(final_weights(straight), final_weights(run))
    assert_clean_layout(str(run), steps)


# ----------------------------------------------------------------------------- failed writes
FAULTY = [
    (os, "fsync"),
    (os, "replace"),
    (os, "symlink"),
    (os, "makedirs"),
    (torch, "save"),
    (checkpoints, "write_file"),
    (shutil, "rmtree"),
]


def fault_at(monkeypatch, fail_at, log):
    """Count the filesystem calls in save_checkpoint; the fail_at-th raises ENOSPC (disk full)."""
    inside = [False]
    for module, name in FAULTY:
        real = getattr(module, name)

        def wrapped(*a, _real=real, _name=name, **k):
            if inside[0]:
                log.append((_name, str(a[1]) if _name in ("replace", "symlink") else ""))
                if len(log) - 1 == fail_at:
                    raise OSError(errno.ENOSPC, "No space left on device (simulated)")
            return _real(*a, **k)

        monkeypatch.setattr(module, name, wrapped)
    real_save = pretrain.save_checkpoint

    def save(*a, **k):
        inside[0] = True
        try:
            return real_save(*a, **k)
        finally:
            inside[0] = False

    monkeypatch.setattr(pretrain, "save_checkpoint", save)


def test_a_failed_write_anywhere_in_a_save_leaves_a_loadable_resumable_run(tmp_path, monkeypatch):
    tokens, flat_lr = synthetic_tokens(), dict(min_lr=3e-3)  # the same lr whatever --steps says
    straight = tiny_model()
    cfg = cfg_for(tmp_path / "straight", steps=6, **flat_lr)
    train(straight, make_get_batch(tokens), cfg, {"phase": "test"})
    base = cfg_for(tmp_path / "base", steps=4, save_every=1, **flat_lr)
    train(tiny_model(), make_get_batch(tokens), base, {"phase": "test"})

    def save_step_5(fail_at):
        run = tmp_path / f"fail{fail_at}"
        shutil.copytree(base.out_dir, run, symlinks=True)
        cfg = cfg_for(tmp_path, out_dir=str(run), steps=5, save_every=1, resume=True, **flat_lr)
        log = []
        with monkeypatch.context() as m:
            fault_at(m, fail_at, log)
            try:
                train(tiny_model(seed=9), make_get_batch(tokens), cfg, {"phase": "test"})
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return cfg, log, True
        return cfg, log, False

    cfg, calls, failed = save_step_5(-1)  # no failure: the calls a save makes
    assert not failed and len(calls) > 10
    publish = calls.index(("replace", os.path.join(cfg.out_dir, "latest")))
    for fail_at in range(len(calls)):
        cfg, _, failed = save_step_5(fail_at)
        assert failed, calls[fail_at]
        assert published_step(cfg.out_dir) == (5 if fail_at > publish else 4), calls[fail_at]
        assert not [n for n in os.listdir(cfg.out_dir) if n.startswith(".tmp")]  # space freed
        cfg.steps = 6
        resumed = tiny_model(seed=7)
        train(resumed, make_get_batch(tokens), cfg, {"phase": "test"})
        assert_bitwise_equal(weights(straight), weights(resumed))


def test_a_rerun_saving_the_same_step_never_loses_the_published_save(tmp_path, monkeypatch):
    """A fresh run into a folder that holds a save of the step it saves (SFT saves only its last
    step): whichever filesystem call fails (or a kill there), a complete save stays loadable, the
    old one until the new one is published, and the next save finishes an interrupted swap."""
    model, run = tiny_model(), str(tmp_path / "run")
    config = {"model": pretrain.dataclasses.asdict(model.cfg), "step": 3}
    old = {k: v + 1 for k, v in model.state_dict().items()}
    new = {k: v + 2 for k, v in model.state_dict().items()}
    save_checkpoint(run, old, config, {"step": 3})

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def holds(folder, state):
        got = final_weights(folder)
        return all(torch.equal(got[k], v) for k, v in state.items())

    def rerun(fail_at, folder):
        shutil.copytree(run, folder, symlinks=True)
        log = []
        with monkeypatch.context() as m:
            fault_at(m, fail_at, log)
            try:
                pretrain.save_checkpoint(folder, new, config, {"step": 3})
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return log, True
        return log, False

    clean = str(tmp_path / "clean")
    calls, failed = rerun(-1, clean)
    assert not failed and holds(clean, new)
    publish = calls.index(("replace", os.path.join(clean, "latest")))
    for fail_at in range(len(calls)):
        folder = str(tmp_path / f"fail{fail_at}")
        _, failed = rerun(fail_at, folder)
        assert failed, calls[fail_at]
        survivor = new if fail_at > publish else old
        assert holds(folder, survivor), (fail_at, calls[fail_at])
        with monkeypatch.context() as m:  # the next rerun fails too, at its first write
            m.setattr(torch, "save", no_space)
            with pytest.raises(OSError):
                save_checkpoint(folder, {k: v + 3 for k, v in new.items()}, config, {"step": 3})
        assert holds(folder, survivor), (fail_at, calls[fail_at])
        save_checkpoint(folder, new, config, {"step": 3})  # the next save tidies up
        names = ["config.json", "latest", "model.pt", "step_000003", "train_state.pt"]
        assert sorted(os.listdir(folder)) == names and holds(folder, new)


def test_save_protocol_fsyncs_then_renames_then_publishes(tmp_path, monkeypatch):
    """The order a power cut needs: every file and its folder fsynced before the folder is renamed;
    the rename fsynced before `latest` moves; `latest` always names a complete folder."""
    run = os.path.realpath(tmp_path / "run")  # as /proc/self/fd names it
    model = tiny_model()
    config = {"model": pretrain.dataclasses.asdict(model.cfg)}
    save_checkpoint(run, model.state_dict(), dict(config, step=1), {"step": 1})
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        if os.path.basename(dst) == "latest":
            target = os.path.join(run, os.readlink(src))
            assert {"model.pt", "config.json", "train_state.pt"} <= set(os.listdir(target))
        events.append(("replace", os.path.abspath(src), os.path.abspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(run, model.state_dict(), dict(config, step=2), {"step": 2})
    monkeypatch.undo()

    tmp, final = os.path.join(run, ".tmp_step_000002"), os.path.join(run, "step_000002")
    rename = events.index(("replace", tmp, final))
    synced = {e[1] for e in events[:rename] if e[0] == "fsync"}
    files = ("model.pt", "config.json", "train_state.pt")
    assert {os.path.join(tmp, f) for f in files} | {tmp} <= synced
    publish = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2].endswith("latest"))
    assert rename < publish and ("fsync", run) in events[rename:publish]
    assert ("fsync", run) in events[publish:]
    assert sorted(os.listdir(run)) == [
        "config.json",
        "latest",
        "model.pt",
        "step_000001",
        "step_000002",
        "train_state.pt",
    ]


# ----------------------------------------------------------------------------- layout and loaders
def test_layout_keeps_the_last_k_and_every_loader_finds_the_newest_complete_save(tmp_path):
    model = tiny_model()
    config = {"model": pretrain.dataclasses.asdict(model.cfg)}
    run = str(tmp_path / "run")
    for step in range(1, 5):
        state = {k: v + step for k, v in model.state_dict().items()}
        save_checkpoint(run, state, dict(config, step=step), {"step": step}, keep=3)
    assert checkpoints.step_folders(run) == ["step_000002", "step_000003", "step_000004"]
    assert load_checkpoint(run)[1]["step"] == 4 and load_model(run)[1]["step"] == 4
    assert load_checkpoint(os.path.join(run, "step_000002"))[1]["step"] == 2  # a step folder itself
    with open(os.path.join(run, "config.json"), encoding="utf-8") as fh:  # old paths still reach it
        assert json.load(fh)["step"] == 4

    os.remove(os.path.join(run, "latest"))  # a missing pointer: the newest step folder
    assert load_checkpoint(run)[1]["step"] == 4
    os.symlink("step_000009", os.path.join(run, "latest"))  # a stale one: the same
    assert load_checkpoint(run)[1]["step"] == 4

    flat = tmp_path / "flat"  # the old flat layout keeps loading
    flat.mkdir()
    torch.save(model.state_dict(), flat / "model.pt")
    (flat / "config.json").write_text(json.dumps(dict(config, step=7)))
    assert load_checkpoint(str(flat))[1]["step"] == 7
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "nothing"))


def test_resume_of_a_run_killed_before_its_first_save_starts_at_step_0(tmp_path):
    cfg = cfg_for(tmp_path, steps=2, resume=True)
    os.makedirs(os.path.join(cfg.out_dir, ".tmp_step_000001"))  # what a kill mid-save leaves
    logged = []
    get_batch = make_get_batch(synthetic_tokens())
    train(tiny_model(), get_batch, cfg, {"phase": "test"}, log=logged.append)
    assert any("no complete save" in line for line in logged)
    assert_clean_layout(cfg.out_dir, 2, saves=1)  # saved at the end only


def test_resume_drops_a_metrics_row_torn_by_a_kill_and_a_killed_rewrite(tmp_path):
    tokens = synthetic_tokens()
    cfg = cfg_for(tmp_path, steps=3, save_every=1)
    train(tiny_model(), make_get_batch(tokens), cfg, {"phase": "test"})
    with open(os.path.join(cfg.out_dir, "metrics.jsonl"), "a", encoding="utf-8") as fh:
        fh.write('{"step": 4, "lo')
    for name in ("metrics.jsonl.tmp4242", "judge_eval.json.tmp77"):  # what killed writes leave
        with open(os.path.join(cfg.out_dir, name), "w") as fh:
            fh.write('{"step": 1}\n')
    assert evaluate.loss_curve(cfg.out_dir)["step"] == [1, 2, 3]  # evaluate reads past it too
    cfg.steps, cfg.resume = 4, True
    train(tiny_model(), make_get_batch(tokens), cfg, {"phase": "test"})
    assert_clean_layout(cfg.out_dir, 4)


# ----------------------------------------------------------------------------- planted pickles
class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what an attacker's pickle does on load
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_planted_pickle_in_every_pt_file_is_refused_without_running(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    cfg = cfg_for(tmp_path, out_dir=str(run), steps=2, save_every=1)
    model = tiny_model()
    train(model, make_get_batch(synthetic_tokens()), cfg, {"phase": "test"})
    planted = [
        os.path.join(d, f)
        for d, _, fs in os.walk(run)
        for f in fs
        if f.endswith(".pt") and not os.path.islink(os.path.join(d, f))
    ]
    assert len(planted) == 4  # model.pt and train_state.pt of both kept saves
    for path in planted:
        with open(path, "wb") as fh:
            pickle.dump({"state": Payload(marker)}, fh)
    with open(planted[0], "rb") as fh:  # the plant is real: an ordinary unpickle runs it
        pickle.load(fh)
    assert marker.exists()
    marker.unlink()

    refused = "refused to load.*nothing in it was run"
    with pytest.raises(ValueError, match=refused):
        load_model(str(run))
    with pytest.raises(ValueError, match=refused):
        evaluate.load(str(run), "cpu")
    with pytest.raises(SystemExit, match=refused):
        convert.main(["--to-hf", str(run), str(tmp_path / "hf")])
    cfg.resume, cfg.steps = True, 3
    with pytest.raises(ValueError, match=refused):
        train(tiny_model(), make_get_batch(synthetic_tokens()), cfg, {"phase": "test"})
    assert not marker.exists()


def test_a_run_in_the_old_flat_layout_still_resumes_exactly(tmp_path):
    """The layout before step folders: files directly in the run folder, numpy's RNG state as an
    array (allowed: arrays, nothing else), a checkpoint id shared by config and train_state."""
    tokens, flat_lr = synthetic_tokens(), dict(min_lr=3e-3)  # the same lr whatever --steps says
    straight = tiny_model()
    cfg = cfg_for(tmp_path / "straight", steps=4, **flat_lr)
    train(straight, make_get_batch(tokens), cfg, {"phase": "test"})
    cfg = cfg_for(tmp_path / "new", steps=2, **flat_lr)
    train(tiny_model(), make_get_batch(tokens), cfg, {"phase": "test"})
    found, old = find_checkpoint(cfg.out_dir), tmp_path / "old"
    old.mkdir()  # the same save, as the old code wrote it
    with open(os.path.join(found, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    state = torch.load(os.path.join(found, "train_state.pt"), weights_only=True)
    for rng in state["rng"]:
        kind, keys, *rest = rng["numpy"]
        rng["numpy"] = (kind, np.array(keys, dtype=np.uint32), *rest)
    config["checkpoint_id"] = state["checkpoint_id"] = "0123abcd"
    torch.save(state, old / "train_state.pt")
    (old / "config.json").write_text(json.dumps(config))
    for name in ("model.pt", "metrics.jsonl"):
        shutil.copy(os.path.join(cfg.out_dir, name), old / name)

    resumed = tiny_model(seed=3)
    cfg = cfg_for(tmp_path, out_dir=str(old), steps=4, resume=True, **flat_lr)
    train(resumed, make_get_batch(tokens), cfg, {"phase": "test"})
    assert_bitwise_equal(weights(straight), weights(resumed))
    assert_clean_layout(str(old), 4, saves=1)  # from its first new save on: the new layout

    (old / "interrupted").mkdir()  # an old save cut between two renames: ids that disagree
    config["checkpoint_id"] = "456789ef"
    (old / "interrupted" / "config.json").write_text(json.dumps(config))
    for name in ("model.pt", "train_state.pt"):
        shutil.copy(old / name, old / "interrupted" / name)
    cfg.out_dir, cfg.steps = str(old / "interrupted"), 5
    with pytest.raises(RuntimeError, match="come from different saves"):
        train(tiny_model(), make_get_batch(tokens), cfg, {"phase": "test"})


def test_every_script_loads_a_save_that_a_kill_left_unlinked(tmp_path, small_tokenizer, capsys):
    """A kill between the first save's rename and its publication: no `latest`, no root links.
    chat, evaluate, the fine-tuning phases' --init-from and convert still find the step folder."""
    import chat
    import sft
    from model import Transformer, config_from_preset

    run = tmp_path / "run"
    model = Transformer(
        config_from_preset("tiny", vocab_size=small_tokenizer.vocab_size, max_seq_len=32)
    )
    config = {
        "phase": "sft",
        "model": pretrain.dataclasses.asdict(model.cfg),
        "special_ids": small_tokenizer.special_ids(),
    }
    save_checkpoint(
        str(run),
        model.state_dict(),
        dict(config, step=3),
        {"step": 3},
        tokenizer_path=small_tokenizer.model_path,
    )
    for name in ("latest", "model.pt", "config.json", "train_state.pt", "tokenizer.model"):
        os.remove(run / name)
    assert os.listdir(run) == ["step_000003"]
    _, tok, loaded = evaluate.load(str(run), "cpu")
    assert loaded["step"] == 3 and tok.vocab_size == small_tokenizer.vocab_size
    cfg = evaluate.EvalConfig(ckpts=f"x={run}")
    assert evaluate.checkpoints_to_run(cfg, []) == {"x": str(run)}
    _, tok, path = sft.load_start(sft.SFTConfig(init_from=str(run), seq_len=8), "cpu")
    assert path == str(run / "step_000003" / "tokenizer.model")
    chat.main(["--ckpt", str(run), "--prompt", "hi", "--max-new-tokens", "2"])
    assert capsys.readouterr().out
    convert.main(["--to-hf", str(run), str(tmp_path / "hf")])
    assert os.path.exists(tmp_path / "hf" / "config.json")


def test_keep_last_sets_how_many_saves_a_run_keeps(tmp_path):
    cfg = cfg_for(tmp_path, steps=5, save_every=1, keep_last=3)
    train(tiny_model(), make_get_batch(synthetic_tokens()), cfg, {"phase": "test"})
    assert_clean_layout(cfg.out_dir, 5, saves=3)
    assert load_checkpoint(os.path.join(cfg.out_dir, "step_000003"))[1]["step"] == 3


def test_a_fresh_run_over_a_save_keeps_that_saves_log_until_its_own_first_save(tmp_path):
    """The published save's metrics.jsonl stays whole while a fresh run into its folder has not
    saved (its rows go to metrics.jsonl.new), and is replaced by the new run's log at its first
    save; a resume drops the log of a fresh run that died unsaved."""
    tokens, run = synthetic_tokens(), str(tmp_path / "run")
    log = os.path.join(run, "metrics.jsonl")

    def read(path):
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    def dies_at_step(n):  # a crash (not a signal: nothing is saved) in step n
        get_batch = make_get_batch(tokens)

        def batch(step, micro):
            if step + 1 == n:
                raise RuntimeError("killed")
            return get_batch(step, micro)

        return batch

    first = train(
        tiny_model(),
        make_get_batch(tokens),
        cfg_for(tmp_path, out_dir=run, steps=3),
        {"phase": "test"},
    )
    assert read(log) == first
    with pytest.raises(RuntimeError, match="killed"):  # a fresh run, another lr: other rows
        train(
            tiny_model(seed=2),
            dies_at_step(3),
            cfg_for(tmp_path, out_dir=run, steps=3, lr=5e-3),
            {"phase": "test"},
        )
    assert read(log) == first and published_step(run) == 3
    assert [r["step"] for r in read(log + ".new")] == [1, 2]
    assert evaluate.loss_curve(run)["loss"] == [r["loss"] for r in first]

    second = train(
        tiny_model(seed=2),
        make_get_batch(tokens),
        cfg_for(tmp_path, out_dir=run, steps=3, lr=5e-3),
        {"phase": "test"},
    )
    assert read(log) == second != first and not os.path.exists(log + ".new")
    assert_clean_layout(run, 3, saves=1)

    with pytest.raises(RuntimeError, match="killed"):
        train(
            tiny_model(), dies_at_step(2), cfg_for(tmp_path, out_dir=run, steps=3), {"phase": "t"}
        )
    state, config = load_checkpoint(run)  # another writer's save does not publish that log
    train_state = torch.load(
        os.path.join(find_checkpoint(run), "train_state.pt"), weights_only=True
    )
    save_checkpoint(run, state, config, train_state)
    assert read(log) == second and os.path.exists(log + ".new")
    resumed = train(
        tiny_model(),
        make_get_batch(tokens),
        cfg_for(tmp_path, out_dir=run, steps=4, lr=5e-3, resume=True),
        {"phase": "test"},
    )
    assert read(log) == second + resumed and not os.path.exists(log + ".new")


def test_a_kill_between_a_fresh_runs_first_save_and_its_log_is_mended_on_resume(
    tmp_path, monkeypatch
):
    """The first save of a fresh run over an earlier save is published, then its log: a kill in
    between (here: the log's rename fails) leaves the new save beside the old log, and --resume
    publishes the new run's rows (written before its save) instead of splicing the old run's. The
    same for a rerun to the same step, whose save is published before the old one is removed; a
    signal stop's save publishes the log like any other."""
    tokens, run = synthetic_tokens(), str(tmp_path / "run")
    log = os.path.join(run, "metrics.jsonl")

    def read(path):
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    def run_for(steps, lr, **kw):
        cfg = cfg_for(tmp_path, out_dir=run, steps=steps, lr=lr, **kw)
        return train(tiny_model(), make_get_batch(tokens), cfg, {"phase": "test"})

    old = run_for(3, 1e-3)
    real_replace = os.replace

    def killed_at_log(src, dst):
        if src.endswith("metrics.jsonl.new"):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    for first in (2, 5):  # a first save before the published one's step, then at it (a rerun)
        monkeypatch.setattr(checkpoints.os, "replace", killed_at_log)
        with pytest.raises(KeyboardInterrupt):
            run_for(first, 5e-3, save_every=first)
        monkeypatch.setattr(checkpoints.os, "replace", real_replace)
        assert published_step(run) == first and read(log) == old
        new = read(log + ".new")
        assert [r["step"] for r in new] == list(range(1, first + 1))
        resumed = run_for(first + 3 if first == 2 else 6, 5e-3, resume=True)
        assert read(log) == new + resumed and not os.path.exists(log + ".new")
        old = read(log)

    def stop_after_step_2(step, micro):  # SIGINT: the loop saves at step 2 and exits
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return make_get_batch(tokens)(step, micro)

    with pytest.raises(SystemExit):
        train(tiny_model(), stop_after_step_2, cfg_for(tmp_path, out_dir=run, steps=4), {"p": 0})
    assert published_step(run) == 2 and [r["step"] for r in read(log)] == [1, 2]
    assert not os.path.exists(log + ".new")
