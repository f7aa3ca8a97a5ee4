"""convert.py: a minihcx checkpoint to the Hugging Face Llama layout and back. A tool, no paper
section: it opens the HCX §2.1 model to the tools that read Hugging Face folders.

model.py *is* Llama (pre-norm RMSNorm, half-split RoPE, GQA, SwiGLU, no biases), so conversion is
renaming: the one name mapping lives here (to_hf_state_dict / from_hf_state_dict /
hf_llama_config_dict) and the parity tests use the same one. Around it, this script adds folders:

  minihcx checkpoint (DESIGN.md §1)     Hugging Face folder (transformers, vLLM, llama.cpp read it)
    model.pt: plain state dict      <->   model.safetensors (or pytorch_model.bin), "model." names
    config.json: ModelConfig, phase <->   config.json (LlamaConfig fields), generation_config.json
    tokenizer.model                 <->   tokenizer.model, tokenizer_config.json (special tokens,
                                          chat template), special_tokens_map.json

The tokenizer.model is the same sentencepiece file. Encoding with plain sentencepiece gives our ids
for English and code; for Korean it does when the tokenizer was trained without morpheme
segmentation (`tokenizer.py --no-morpheme-aware`). The default tokenizer cuts Hangul words at
morpheme boundaries *before* sentencepiece (tokenizer.segment_korean), which a .model file cannot
express: encode each segment and concatenate, as Tokenizer.encode does (README, "Hugging Face
export" has the recipe).

Run:
  python convert.py --to-hf out/sft out/hf/sft            # export (then:
                                                          # AutoModelForCausalLM.from_pretrained)
  python convert.py --to-hf out/sft out/hf/sft --dtype bfloat16
  python convert.py --from-hf path/to/llama out/imported  # import a local Llama folder (no network)
  python convert.py --to-hf out/reward_model out/hf/rm    # a reward model:
                                                          # LlamaForSequenceClassification
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys

import sentencepiece as spm
import torch

from model import ModelConfig, Transformer
from pretrain import find_checkpoint, load_checkpoint, load_tensors, save_checkpoint
from readers import write_file
from tokenizer import SPECIAL_PIECES, Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
CHAT_TEMPLATE = (  # DESIGN.md §2, as Tokenizer.render_chat builds it in token space
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|endofturn|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


# --------------------------------------------------------------------------------------------------
# Hugging Face LlamaForCausalLM interop: our names are HF's without the "model." prefix


def to_hf_state_dict(state_dict, cfg: ModelConfig) -> dict:
    """Our state dict -> LlamaForCausalLM's.
    With tied embeddings lm_head.weight is left out, as HF saves it."""
    out = {}
    for name, t in state_dict.items():
        if name == "lm_head.weight":
            if not cfg.tie_embeddings:
                out[name] = t
        else:
            out["model." + name] = t
    return out


def from_hf_state_dict(hf_state_dict, cfg: ModelConfig) -> dict:
    """LlamaForCausalLM's state dict -> ours. Drops rotary inv_freq buffers (we recompute them)."""
    out = {}
    for name, t in hf_state_dict.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight":
            out[name] = t
        elif name.startswith("model."):
            out[name[len("model.") :]] = t
        else:
            raise KeyError(
                f"from_hf_state_dict: unexpected key {name!r} (not a LlamaForCausalLM weight)"
            )
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["embed_tokens.weight"]
    elif "lm_head.weight" not in out:
        raise KeyError("from_hf_state_dict: no lm_head.weight but cfg.tie_embeddings is False")
    return out


def hf_llama_config_dict(cfg: ModelConfig) -> dict:
    """transformers.LlamaConfig kwargs describing the same model (rope_theta for transformers 4,
    rope_parameters for 5)."""
    return dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
    )


def have_safetensors():
    try:
        import safetensors.torch  # noqa: F401

        return True
    except ImportError:
        return False


def _stage_files(out_dir, files):
    """Write {name: content} (text, or write_fn(path): readers.write_file) to temporary names in
    out_dir, then rename them all into place: a failure while writing leaves whatever out_dir held
    before untouched."""
    os.makedirs(out_dir, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    staged = {}
    try:
        for name, content in files.items():
            staged[name] = os.path.join(out_dir, f".{name}.tmp-{os.getpid()}")
            write_file(staged[name], content)
            # as a plain open() would (safetensors writes 0600)
            os.chmod(staged[name], 0o666 & ~umask)
        for name, tmp in staged.items():  # config.json last: it is what loaders open first
            os.replace(tmp, os.path.join(out_dir, name))
    finally:
        for tmp in staged.values():
            if os.path.exists(tmp):
                os.remove(tmp)


def _refuse_overwrite(src_dir, out_dir, other_format_files, what):
    """Converting into the source folder, or over a folder of the other format, would replace its
    config.json and leave neither format loadable."""
    if os.path.realpath(src_dir) == os.path.realpath(out_dir):
        raise ValueError(f"{out_dir}: the output folder is the input folder; give another OUT_DIR")
    for name in other_format_files:
        if os.path.exists(os.path.join(out_dir, name)):
            raise ValueError(
                f"{out_dir}: holds {name} ({what}); converting into it would replace "
                f"its config.json. Give an empty or new OUT_DIR"
            )


def _json(obj):
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


# -----------------------------------------------------------------------------------------------
# minihcx -> Hugging Face


def hf_config(cfg: ModelConfig, special_ids: dict, dtype: str, extra: dict) -> dict:
    """config.json of a LlamaForCausalLM, or of a LlamaForSequenceClassification with one label for
    a reward model (reward_model.py: its score is read at the last non-pad token, as ours is). The
    "minihcx" block is ignored by transformers and lets --from-hf restore the options HF has no
    field for (multiple_of, dropout) and the phase."""
    head = (
        {"architectures": ["LlamaForSequenceClassification"], "num_labels": 1}
        if cfg.reward_head
        else {"architectures": ["LlamaForCausalLM"]}
    )
    return {
        **head,
        "model_type": "llama",
        **hf_llama_config_dict(cfg),
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "pad_token_id": special_ids["pad"],
        "dtype": dtype,
        "torch_dtype": dtype,
        "use_cache": True,
        "minihcx": extra,
    }


def segmentation(tok: Tokenizer) -> str:
    """ "morpheme-v1" when Tokenizer.encode cuts Hangul words before sentencepiece, else "none"."""
    return "morpheme-v1" if tok.morpheme_aware else "none"


def tokenizer_files(tok: Tokenizer, max_seq_len: int) -> dict:
    """tokenizer_config.json and special_tokens_map.json for a sentencepiece LlamaTokenizer."""
    chat_and_fim = ("system", "user", "assistant", "eot", "fim_prefix", "fim_middle", "fim_suffix")
    special = {f"{name}_token": SPECIAL_PIECES[name] for name in ("bos", "eos", "unk", "pad")}
    marker = tok.sp.id_to_piece(len(SPECIAL_PIECES))  # the segmentation marker, a control piece too
    special["additional_special_tokens"] = [SPECIAL_PIECES[n] for n in chat_and_fim] + [marker]
    config = {
        "tokenizer_class": "LlamaTokenizer",
        **special,
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": False,
        "legacy": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_seq_len,
        "chat_template": CHAT_TEMPLATE,
        # not read by transformers: how to get Tokenizer.encode's ids (see the module
        # docstring)
        "minihcx_segmentation": segmentation(tok),
    }
    return {"tokenizer_config.json": config, "special_tokens_map.json": special}


def export_hf(ckpt_dir, out_dir, dtype="float32", use_safetensors=None):
    """Write a minihcx checkpoint folder as a Hugging Face Llama folder. Returns the files
    written."""
    found = find_checkpoint(ckpt_dir) or ckpt_dir  # a run folder: its newest complete save
    state, config = load_checkpoint(found)
    _refuse_overwrite(ckpt_dir, out_dir, ["model.pt"], "a minihcx checkpoint")
    if "model" not in config:
        raise ValueError(
            f"{ckpt_dir}/config.json: no 'model' field (the model config); not a minihcx checkpoint"
        )
    cfg = ModelConfig(**config["model"])
    tok_path = os.path.join(found, "tokenizer.model")
    tok = Tokenizer(tok_path)  # FileNotFoundError / ValueError name the file
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"{tok_path}: {tok.vocab_size} pieces but the model has only "
            f"{cfg.vocab_size} embeddings; the tokenizer does not belong to this "
            "checkpoint"
        )
    use_safetensors = have_safetensors() if use_safetensors is None else use_safetensors
    hf_state = to_hf_state_dict(state, cfg)
    if cfg.reward_head:  # LlamaForSequenceClassification calls its head "score"
        hf_state["score.weight"] = hf_state.pop("lm_head.weight")
    weights = {k: v.to(DTYPES[dtype]).contiguous() for k, v in hf_state.items()}
    if use_safetensors:
        from safetensors.torch import save_file

        weights_name, write_weights = (
            "model.safetensors",
            lambda p: save_file(weights, p, {"format": "pt"}),
        )
    else:
        weights_name, write_weights = "pytorch_model.bin", lambda p: torch.save(weights, p)
    special_ids = tok.special_ids()
    extra = {
        "phase": config.get("phase"),
        "multiple_of": cfg.multiple_of,
        "dropout": cfg.dropout,
        "special_ids": special_ids,
        "segmentation": segmentation(tok),
    }
    generation = {
        "bos_token_id": special_ids["bos"],
        "pad_token_id": special_ids["pad"],
        # a chat turn ends at eot
        "eos_token_id": [special_ids["eos"], special_ids["eot"]],
    }
    files = {weights_name: write_weights, "tokenizer.model": lambda p: shutil.copyfile(tok_path, p)}
    files |= {name: _json(obj) for name, obj in tokenizer_files(tok, cfg.max_seq_len).items()}
    files["generation_config.json"] = _json(generation)
    files["config.json"] = _json(hf_config(cfg, special_ids, dtype, extra))
    _stage_files(out_dir, files)
    if tok.morpheme_aware:
        print(
            "convert: note: this tokenizer cuts Korean words at morpheme boundaries before "
            "sentencepiece; plain sentencepiece/transformers encode ~1.7 % of Korean words "
            "differently (README, 'Hugging Face export and import')",
            file=sys.stderr,
        )
    # an older export's weights would shadow or confuse, and the files transformers writes for a
    # fast tokenizer (save_pretrained into this folder) are read before tokenizer.model
    fast_tokenizer = ("tokenizer.json", "chat_template.jinja", "added_tokens.json")
    for stale in (set(WEIGHT_FILES) - {weights_name}) | set(fast_tokenizer):
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))
    return sorted(files)


# -----------------------------------------------------------------------------------------------
# Hugging Face -> minihcx


def model_config_from_hf(hf: dict, where: str) -> ModelConfig:
    """A LlamaConfig dict -> ModelConfig, refusing what model.py does not implement."""
    archs = hf.get("architectures") or []
    if hf.get("model_type") != "llama" and "LlamaForCausalLM" not in archs:
        raise ValueError(
            f"{where}: model_type={hf.get('model_type')!r}, architectures={archs}; "
            f"only Llama (LlamaForCausalLM) checkpoints are supported"
        )

    def refuse(field, what):
        raise ValueError(f"{where}: {field} — {what}; model.py does not implement it")

    if any(a != "LlamaForCausalLM" for a in archs):
        refuse(
            "architectures",
            f"{archs}: only a language model (LlamaForCausalLM) is imported; "
            "a reward model's export (LlamaForSequenceClassification) is "
            "one-way",
        )
    rope = hf.get("rope_parameters") or {}
    if hf.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        refuse("rope_scaling / rope_parameters", f"RoPE scaling {hf.get('rope_scaling') or rope}")
    for field in ("attention_bias", "mlp_bias"):
        if hf.get(field):
            refuse(field, "bias terms in the linear layers")
    if hf.get("hidden_act", "silu") != "silu":
        refuse("hidden_act", f"activation {hf['hidden_act']!r} (SwiGLU needs silu)")
    missing = [
        k
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        )
        if k not in hf
    ]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    n_heads = hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, hf["hidden_size"] // n_heads):
        refuse("head_dim", f"head_dim={hf['head_dim']} != hidden_size / num_attention_heads")
    ours = hf.get("minihcx") or {}
    try:
        return ModelConfig(
            vocab_size=hf["vocab_size"],
            dim=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            ffn_hidden=hf["intermediate_size"],
            max_seq_len=hf.get("max_position_embeddings", 2048),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            multiple_of=ours.get("multiple_of", 64),
            dropout=ours.get("dropout", 0.0),
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def read_hf_weights(hf_dir) -> dict:
    """model.safetensors / pytorch_model.bin, or their sharded forms (an *.index.json naming the
    shards)."""
    found = [name for name in WEIGHT_FILES if os.path.exists(os.path.join(hf_dir, name))]
    if not found:
        raise FileNotFoundError(f"{hf_dir}: no weights (looked for {', '.join(WEIGHT_FILES)})")
    name = found[0]  # safetensors first, as transformers prefers it
    if name.endswith(".index.json"):
        with open(os.path.join(hf_dir, name), encoding="utf-8") as fh:
            shards = sorted(set(json.load(fh)["weight_map"].values()))
    else:
        shards = [name]
    state = {}
    for shard in shards:
        path = os.path.join(hf_dir, shard)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path}: shard named by {os.path.join(hf_dir, name)} is missing"
            )
        if shard.endswith(".safetensors"):
            if not have_safetensors():
                raise ImportError(f"{path}: reading safetensors needs `pip install safetensors`")
            from safetensors.torch import load_file

            state |= load_file(path)
        else:
            state |= load_tensors(path)
    return state


def import_hf(hf_dir, out_dir, dtype="float32", skip_tokenizer=False):
    """Read a local Hugging Face Llama folder into a minihcx checkpoint folder. Returns its
    config."""
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: missing; not a Hugging Face model folder")
    with open(config_path, encoding="utf-8") as fh:
        hf = json.load(fh)
    cfg = model_config_from_hf(hf, config_path)
    _refuse_overwrite(hf_dir, out_dir, WEIGHT_FILES, "Hugging Face weights")
    found = find_checkpoint(out_dir)
    if found:  # a save of step 0 would become the run's latest and its newer saves be removed
        with open(os.path.join(found, "config.json"), encoding="utf-8") as fh:
            if "imported" not in json.load(fh):
                raise ValueError(
                    f"{out_dir}: holds a trained checkpoint ({found}); importing into it would "
                    "replace its saves. Give an empty or new OUT_DIR"
                )
    tok_path = os.path.join(hf_dir, "tokenizer.model")
    if not skip_tokenizer:
        if not os.path.exists(tok_path):
            raise FileNotFoundError(
                f"{tok_path}: missing (minihcx needs a sentencepiece "
                f"tokenizer.model; --skip-tokenizer imports the weights alone)"
            )
        try:
            pieces = spm.SentencePieceProcessor(model_file=tok_path).get_piece_size()
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{tok_path}: not a sentencepiece model ({e})") from None
        if pieces > cfg.vocab_size:
            raise ValueError(
                f"{tok_path}: {pieces} pieces but {config_path} has vocab_size "
                f"{cfg.vocab_size}; the tokenizer does not belong to these weights"
            )
    try:
        state = from_hf_state_dict(read_hf_weights(hf_dir), cfg)
    except KeyError as e:
        raise ValueError(f"{hf_dir}: {e.args[0]}") from None
    model = Transformer(cfg)  # strict load: every weight present, every shape right
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{hf_dir}: weights do not fit {config_path}: {e}") from None
    state = model.to(DTYPES[dtype]).state_dict()  # cast the module: a tied lm_head stays one tensor
    ours = hf.get("minihcx") or {}
    special_ids = {
        "pad": hf.get("pad_token_id"),
        "bos": hf.get("bos_token_id"),
        "eos": hf.get("eos_token_id"),
    }
    if not skip_tokenizer:
        try:
            special_ids = Tokenizer(tok_path).special_ids()
        except ValueError:  # a foreign sentencepiece model: keep it, say what will not work
            print(
                f"convert: {tok_path} was not trained by tokenizer.py (no minihcx control "
                "tokens): the weights import and load (pretrain.load_model), but chat.py, sft.py "
                f"and jsft.py need a tokenizer.py tokenizer",
                file=sys.stderr,
            )
    config = {
        "phase": ours.get("phase") or "import",
        "init_from": os.path.abspath(hf_dir),
        "special_ids": special_ids,
        "model": dataclasses.asdict(cfg),
        "imported": {"format": "hf-llama", "from": os.path.abspath(hf_dir), "dtype": dtype},
    }
    save_checkpoint(out_dir, state, config, tokenizer_path=None if skip_tokenizer else tok_path)
    return config


# -----------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Convert between a minihcx checkpoint folder and the "
        "Hugging Face Llama layout (local folders only, no "
        "network)."
    )
    way = ap.add_mutually_exclusive_group(required=True)
    way.add_argument(
        "--to-hf", nargs=2, metavar=("CKPT_DIR", "OUT_DIR"), help="export a minihcx checkpoint"
    )
    way.add_argument(
        "--from-hf", nargs=2, metavar=("HF_DIR", "OUT_DIR"), help="import a Llama folder"
    )
    ap.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the written weights"
    )
    ap.add_argument(
        "--format",
        choices=("auto", "safetensors", "bin"),
        default="auto",
        help="--to-hf weights file: auto = model.safetensors if safetensors is "
        "installed, else pytorch_model.bin",
    )
    ap.add_argument(
        "--skip-tokenizer",
        action="store_true",
        help="--from-hf: import weights without a tokenizer.model",
    )
    args = ap.parse_args(argv)
    if args.to_hf and args.skip_tokenizer:
        ap.error(
            "--skip-tokenizer applies to --from-hf only (an export always writes the tokenizer)"
        )
    if args.from_hf and args.format != "auto":
        ap.error(
            "--format applies to --to-hf only (--from-hf reads whichever weights file is there)"
        )
    try:
        if args.to_hf:
            if args.format == "safetensors" and not have_safetensors():
                raise ImportError("--format safetensors needs `pip install safetensors`")
            use = None if args.format == "auto" else args.format == "safetensors"
            files = export_hf(*args.to_hf, dtype=args.dtype, use_safetensors=use)
            print(f"wrote {args.to_hf[1]}: {', '.join(files)}")
        else:
            config = import_hf(*args.from_hf, dtype=args.dtype, skip_tokenizer=args.skip_tokenizer)
            m = config["model"]
            print(
                f"wrote {args.from_hf[1]}: {m['n_layers']} layers, dim {m['dim']}, vocab "
                f"{m['vocab_size']} (model.pt, "
                f"config.json{'' if args.skip_tokenizer else ', tokenizer.model'})"
            )
    except (FileNotFoundError, ValueError, ImportError) as e:
        sys.exit(f"convert: {e}")


if __name__ == "__main__":
    main()
