"""checkpoints.py: the checkpoint layout on disk, written so that a kill never loses a save.

pretrain.py's loop saves with `save_checkpoint` and resumes with `load_checkpoint`; the phases and
tools find a checkpoint with `find_checkpoint` and load one with `pretrain.load_model` (pretrain.py
re-exports these three). DESIGN.md §1 fixes the files of a save. Imports only readers.py.

A run folder (--out-dir) holds one folder per save and a `latest` link to the newest complete one:
    RUN/step_000120/      model.pt  config.json  train_state.pt  tokenizer.model
    RUN/latest -> step_000120        publishing a save = replacing this link (one atomic rename)
    RUN/model.pt -> latest/model.pt  (the same for each file): tools may keep reading RUN/model.pt
    RUN/metrics.jsonl                the loop's log, a row per step (start_metrics, metrics_log)
A fresh run into a folder holding a save logs to RUN/metrics.jsonl.new until its first save, which
carries a copy (step_N/metrics.jsonl) and is then published with it as RUN/metrics.jsonl.
A save is written into RUN/.tmp_step_000120, each file and the folder fsynced, renamed to
step_000120, and only then published; older saves past --keep-last are removed after that. A
rerun that saves a step already on disk publishes the new save from its .tmp folder first and
removes the old one only then. So a kill at any instant leaves `latest` on a complete save (as
PyTorch's distributed checkpoint does), and a failed save never costs the last good one.
Infrastructure every phase shares, no paper section of its own.

Use (a module, not a script):
    from checkpoints import find_checkpoint, load_checkpoint
    print(find_checkpoint("out/sft"))                # out/sft/step_000400: the newest complete save
    state_dict, config = load_checkpoint("out/sft")  # its weights and config.json
"""

import json
import math
import os
import re
import shutil

import torch

from readers import atomic_write, fsync, load_tensors, read_jsonl, write_file

METRICS = "metrics.jsonl"  # in the run folder: one JSON row per optimizer step


def step_folders(run_dir):
    """The step_* folder names of a run, oldest first."""
    names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    return sorted((n for n in names if re.fullmatch(r"step_\d+", n)), key=lambda n: int(n[5:]))


def find_checkpoint(path):
    """The folder holding a checkpoint's files, or None: for a run folder the target of RUN/latest
    (if the link is missing or broken: the newest step folder); a step folder or a folder in the old
    flat layout (model.pt directly inside) is its own checkpoint."""

    def complete(folder):
        return all(os.path.isfile(os.path.join(folder, f)) for f in ("model.pt", "config.json"))

    latest = os.path.join(path, "latest")
    if os.path.islink(latest) and complete(latest):
        return os.path.join(path, os.readlink(latest))
    newest = [os.path.join(path, n) for n in step_folders(path) if complete(os.path.join(path, n))]
    return newest[-1] if newest else path if complete(path) else None


def _symlink_atomic(target, link):
    tmp = os.path.join(os.path.dirname(link), ".link.tmp")  # one writer per run: a fixed name
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _remove_dir(path):
    """Rename away first: a kill while deleting never leaves half a folder under a step name."""
    trash = os.path.join(os.path.dirname(path), ".trash_" + os.path.basename(path))
    shutil.rmtree(trash, ignore_errors=True)
    if os.path.lexists(path):
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _swap_in(run_dir, name):
    """Move the complete save .tmp_NAME to NAME and point `latest` at it. An older folder NAME (a
    rerun to the same step) is removed only once `latest` names the new save: a kill in between
    leaves `latest` on .tmp_NAME (published) or, between the rename and the new link, broken (then
    find_checkpoint falls back to the newest step folder)."""
    tmp, final = os.path.join(run_dir, ".tmp_" + name), os.path.join(run_dir, name)
    if os.path.isdir(tmp):  # else a kill came after the rename: only `latest` is left to move
        _remove_dir(final)
        os.replace(tmp, final)
    fsync(run_dir)
    _symlink_atomic(name, os.path.join(run_dir, "latest"))


def start_metrics(run_dir, resume_step=None):
    """Start a run's log. Fresh (resume_step None): an empty log, and while the folder holds an
    earlier run's save, RUN/metrics.jsonl.new: that save keeps its own log until this run's first
    save publishes the new one in its place (save_checkpoint's `log`), so a fresh run that fails
    before then leaves it whole. Resumed (resume_step: the step of the save it continues):
    RUN/metrics.jsonl keeps its rows up to that step (a row a kill tore is left out), taken from
    the save itself when it carries its log (a fresh run's first save does: a kill between
    publishing it and its log leaves the old log outside). A .new left behind is dropped: the log
    of a fresh run that died before its first save, or one that save carries."""
    path = os.path.join(run_dir, METRICS)
    found = find_checkpoint(run_dir)
    if os.path.exists(path + ".new"):
        os.remove(path + ".new")
    rows = []
    if resume_step is None:
        path += ".new" if found else ""
    else:  # read from the save's own log where it carries one (else `carried` is `path`)
        carried = os.path.join(found, METRICS) if found else path
        source = carried if os.path.exists(carried) else path
        if os.path.exists(source):
            rows = read_jsonl(source, lambda row: row, skip_bad=True)
            rows = [r for r in rows if r.get("step", math.inf) <= resume_step]  # no step: out
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def metrics_log(run_dir):
    """The file the training loop appends its next row to: RUN/metrics.jsonl.new while
    start_metrics has made one (a fresh run over a save, until its first save), else
    RUN/metrics.jsonl."""
    path = os.path.join(run_dir, METRICS)
    return path + ".new" if os.path.exists(path + ".new") else path


KEEP_LAST = 2  # complete saves kept in a run folder by default (pretrain.py's --keep-last)


def save_checkpoint(
    run_dir, model_state, config, train_state=None, tokenizer_path=None, keep=KEEP_LAST, log=None
):
    """Write a self-contained checkpoint (DESIGN.md §1) into its own step folder of `run_dir`,
    publish it and keep the newest `keep` saves. `log`: the run's log (metrics_log); a .new one (a
    fresh run's first save, start_metrics) goes into the save too, and is published as
    RUN/metrics.jsonl right after the save. Returns the step folder."""
    name = f"step_{config.get('step', 0):06d}"
    tmp, final = os.path.join(run_dir, ".tmp_" + name), os.path.join(run_dir, name)
    latest = os.path.join(run_dir, "latest")

    def tmp_published():  # `latest` names .tmp_NAME: the swap below has begun
        return os.path.islink(latest) and os.readlink(latest) == ".tmp_" + name

    fresh_log = log if log and log.endswith(".new") else None  # a fresh run's, first save

    def publish_log():  # right after the save; a kill in between: start_metrics mends it
        if fresh_log and os.path.exists(fresh_log):
            os.replace(fresh_log, os.path.join(run_dir, METRICS))

    if tmp_published():
        _swap_in(run_dir, name)  # a kill cut short the swap below: finish it
    _remove_dir(tmp)  # a kill left it unpublished: `latest` points to an older save
    os.makedirs(tmp)
    model_state = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
    files = {
        "model.pt": lambda p: torch.save(model_state, p),
        "config.json": json.dumps(config, indent=2, ensure_ascii=False),
    }
    if train_state is not None:
        files["train_state.pt"] = lambda p: torch.save(train_state, p)
    if tokenizer_path:
        files["tokenizer.model"] = lambda p: shutil.copyfile(tokenizer_path, p)
    own_log = {METRICS: lambda p: shutil.copyfile(fresh_log, p)} if fresh_log else {}
    try:
        for file, content in {**files, **own_log}.items():
            write_file(os.path.join(tmp, file), content)
            fsync(os.path.join(tmp, file))
        fsync(tmp)
        if os.path.lexists(final):  # a rerun saving the same step: publish the new save first
            _symlink_atomic(".tmp_" + name, latest)
            publish_log()
        _swap_in(run_dir, name)  # the save is published here (or above, when `final` was there)
        publish_log()
    except BaseException:  # a full disk, a failed write: free the space; the last save stays
        if not tmp_published():
            _remove_dir(tmp)
        raise
    for file in files:
        link = os.path.join(run_dir, file)
        if not os.path.islink(link) or os.readlink(link) != os.path.join("latest", file):
            _symlink_atomic(os.path.join("latest", file), link)
    fsync(run_dir)
    kept = step_folders(run_dir)
    kept = kept[: kept.index(name) + 1][-keep:]  # folders after `name` were never published
    for entry in os.listdir(run_dir):
        stale = entry.startswith((".tmp_step_", ".trash_"))
        if stale or entry.startswith("step_") and entry not in kept:
            _remove_dir(os.path.join(run_dir, entry))
    return final


def load_checkpoint(ckpt_dir, device="cpu"):
    """Returns (state_dict, config dict) of a run folder's newest complete save, a step folder,
    or an old flat checkpoint folder. Accepts the wrapper prefixes `_orig_mod.` and `module.`."""
    found = find_checkpoint(ckpt_dir)
    if found is None:
        raise FileNotFoundError(
            f"{ckpt_dir}: no checkpoint (no model.pt and config.json, no "
            f"complete step_* folder); run the phase that writes it first"
        )
    with open(os.path.join(found, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    state = load_tensors(os.path.join(found, "model.pt"), device)
    return {k.replace("_orig_mod.", "").replace("module.", ""): v for k, v in state.items()}, config
