"""Tests for convert.py: minihcx <-> Hugging Face Llama folders. The exported folder is loaded by
transformers (test-only dependency, offline) and must give our logits, our greedy tokens and,
through its tokenizer, our token ids; a round trip must give back identical tensors; bad folders
give clear errors."""

import dataclasses
import io
import json
import os

import pytest
import sentencepiece as spm
import torch

import convert
from model import ModelConfig, Transformer, generate
from pretrain import find_checkpoint, load_checkpoint, load_model, save_checkpoint
from tokenizer import Tokenizer, segment_korean, train_tokenizer

BILINGUAL = (
    "The law applies to everyone. 모든 국민은 법 앞에 평등하다. 대통령으로서의 의무는 "
    "법률로 정한다.\n"
    "def add(a, b):\n    return a + b  # 합계\n인간은 태어날 때부터 자유롭다, and so are "
    "we: 42."
)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def plain_tokenizer(tmp_path_factory):
    """The same fixture corpus as conftest's small_tokenizer, trained without morpheme
    segmentation."""
    root = os.path.dirname(os.path.abspath(__file__))
    corpus = {}
    for lang in ("ko", "en", "code"):
        with open(
            os.path.join(root, "fixtures", "tokenizer", f"{lang}.jsonl"), encoding="utf-8"
        ) as fh:
            corpus[lang] = [json.loads(line)["text"] for line in fh]
    return Tokenizer(
        train_tokenizer(
            corpus, str(tmp_path_factory.mktemp("plain")), vocab_size=1200, morpheme_aware=False
        )
    )


def make_checkpoint(path, tok, seed=0, **overrides):
    """A random tiny model saved as a minihcx checkpoint folder. The blocks are scaled up so greedy
    decoding gives varied tokens, the norm gains are perturbed so a wrong mapping of them would
    show, and rope theta and norm eps are far from every default so a dropped config field would
    show too."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        **{
            **dict(
                vocab_size=tok.vocab_size,
                dim=32,
                n_layers=2,
                n_heads=4,
                n_kv_heads=2,
                multiple_of=16,
                max_seq_len=96,
                rope_theta=500.0,
                norm_eps=0.001,
            ),
            **overrides,
        }
    )
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
            elif name != "embed_tokens.weight":
                p.mul_(8.0)
    save_checkpoint(
        str(path),
        model.state_dict(),
        {"phase": "sft", "special_ids": tok.special_ids(), "model": dataclasses.asdict(cfg)},
        tokenizer_path=tok.model_path,
    )
    return model


# --- round trip -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tied,fmt", [(False, "safetensors"), (True, "safetensors"), (False, "bin"), (True, "bin")]
)
def test_round_trip_gives_identical_tensors(tmp_path, small_tokenizer, tied, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    make_checkpoint(tmp_path / "ckpt", small_tokenizer, tie_embeddings=tied)
    files = convert.export_hf(
        str(tmp_path / "ckpt"), str(tmp_path / "hf"), use_safetensors=fmt == "safetensors"
    )
    assert ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin") in files
    convert.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"))
    before, config_before = load_checkpoint(str(tmp_path / "ckpt"))
    after, config_after = load_checkpoint(str(tmp_path / "back"))
    assert sorted(before) == sorted(after)
    for name in before:
        assert before[name].dtype == after[name].dtype and torch.equal(before[name], after[name]), (
            name
        )
    assert config_after["model"] == config_before["model"]
    assert (
        config_after["special_ids"] == config_before["special_ids"]
        and config_after["phase"] == "sft"
    )
    with (
        open(tmp_path / "ckpt" / "tokenizer.model", "rb") as a,
        open(tmp_path / "back" / "tokenizer.model", "rb") as b,
    ):
        assert a.read() == b.read()
    model, _ = load_model(str(tmp_path / "back"))  # the imported folder is an ordinary checkpoint
    if tied:
        assert model.lm_head.weight is model.embed_tokens.weight


def test_bfloat16_export_halves_the_file_and_rounds_each_weight(tmp_path, small_tokenizer):
    make_checkpoint(tmp_path / "ckpt", small_tokenizer)
    convert.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "fp32"), use_safetensors=False)
    convert.export_hf(
        str(tmp_path / "ckpt"), str(tmp_path / "bf16"), dtype="bfloat16", use_safetensors=False
    )
    size = {d: os.path.getsize(tmp_path / d / "pytorch_model.bin") for d in ("fp32", "bf16")}
    assert 0.45 < size["bf16"] / size["fp32"] < 0.55
    with open(tmp_path / "bf16" / "config.json", encoding="utf-8") as fh:
        assert json.load(fh)["torch_dtype"] == "bfloat16"
    convert.import_hf(str(tmp_path / "bf16"), str(tmp_path / "back"))  # read back into fp32
    before, _ = load_checkpoint(str(tmp_path / "ckpt"))
    after, _ = load_checkpoint(str(tmp_path / "back"))
    for name in before:
        assert after[name].dtype == torch.float32
        assert torch.equal(after[name], before[name].to(torch.bfloat16).float()), name


# --- transformers loads the export and agrees -----------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_transformers_loads_export_with_same_logits_and_greedy_tokens(
    tmp_path, small_tokenizer, tied
):
    transformers = pytest.importorskip("transformers")
    # varied greedy tokens
    ours = make_checkpoint(tmp_path / "ckpt", small_tokenizer, seed=2, tie_embeddings=tied)
    convert.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path / "hf"), local_files_only=True
    ).eval()
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.dtype == torch.float32
    assert hf.num_parameters() == ours.num_params()
    c, tok = ours.cfg, small_tokenizer  # what transformers read from config.json, field by field
    assert (hf.config.hidden_size, hf.config.intermediate_size, hf.config.num_hidden_layers) == (
        c.dim,
        c.ffn_hidden,
        c.n_layers,
    )
    assert (hf.config.num_attention_heads, hf.config.num_key_value_heads) == (
        c.n_heads,
        c.n_kv_heads,
    )
    assert (hf.config.rms_norm_eps, hf.config.rope_parameters["rope_theta"]) == (
        c.norm_eps,
        c.rope_theta,
    )
    assert (
        hf.config.vocab_size,
        hf.config.max_position_embeddings,
        hf.config.tie_word_embeddings,
    ) == (c.vocab_size, c.max_seq_len, tied)
    assert (hf.config.bos_token_id, hf.config.eos_token_id, hf.config.pad_token_id) == (
        tok.bos_id,
        tok.eos_id,
        tok.pad_id,
    )
    prompt, _ = tok.render_chat(
        [{"role": "user", "content": "3 더하기 4는? What is 3 plus 4?"}], add_generation_prompt=True
    )
    idx = torch.tensor([prompt])
    with torch.no_grad():
        assert (ours(idx)[0] - hf(idx).logits).abs().max().item() <= 1e-4
    stop = (tok.eos_id, tok.eot_id)  # the export's generation_config.json stops at both
    mine = generate(ours, [prompt], max_new_tokens=16, temperature=0, stop_ids=stop)[0]
    out = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=16, do_sample=False)
    assert len(set(mine)) > 4  # varied tokens: a real comparison, not one token repeated
    assert out[0, len(prompt) :].tolist() == mine
    assert hf.generation_config.eos_token_id == list(stop)


def test_exported_tokenizer_model_encodes_like_ours_in_sentencepiece(
    tmp_path, plain_tokenizer, small_tokenizer
):
    """The exported tokenizer.model is the same sentencepiece model. Trained without morpheme
    segmentation, plain sentencepiece gives exactly our ids on the bilingual sample. With it (the
    default), plain sentencepiece gives our ids on English and code, and on Korean once each
    segment_korean piece is encoded on its own: the recipe the README documents."""
    english_and_code = "The law applies to everyone.\ndef add(a, b):\n    return a + b  # sum, 42\n"
    sp = {}
    for name, tok in (("plain", plain_tokenizer), ("morpheme", small_tokenizer)):
        make_checkpoint(tmp_path / name, tok)
        convert.export_hf(str(tmp_path / name), str(tmp_path / f"hf-{name}"))
        sp[name] = spm.SentencePieceProcessor(
            model_file=str(tmp_path / f"hf-{name}" / "tokenizer.model")
        )
        assert sp[name].encode(english_and_code) == tok.encode(english_and_code)
        assert sp[name].decode(tok.encode(BILINGUAL)) == BILINGUAL
        # special tokens aside: they are control symbols, text never encodes to them (README)
        assert tok.user_id not in sp[name].encode("<|user|>")
        assert [sp[name].piece_to_id(p) for p in ("<s>", "</s>", "<|endofturn|>")] == [
            tok.bos_id,
            tok.eos_id,
            tok.eot_id,
        ]
    assert sp["plain"].encode(BILINGUAL) == plain_tokenizer.encode(BILINGUAL)
    with open(tmp_path / "hf-morpheme" / "tokenizer_config.json", encoding="utf-8") as fh:
        assert json.load(fh)["minihcx_segmentation"] == "morpheme-v1"
    segmented = [i for piece in segment_korean(BILINGUAL) for i in sp["morpheme"].encode(piece)]
    assert segmented == small_tokenizer.encode(BILINGUAL)
    # without the segmentation step plain sentencepiece merges across a morpheme cut (정|한|다 ->
    # 정|한다)
    assert sp["morpheme"].encode(BILINGUAL) != small_tokenizer.encode(BILINGUAL)


def test_transformers_tokenizer_and_chat_template_match_ours(
    tmp_path, plain_tokenizer, small_tokenizer
):
    transformers = pytest.importorskip("transformers")
    # transformers reads a sentencepiece .model through protobuf
    pytest.importorskip("google.protobuf")
    english_chat = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 3 plus 4?"},
        {"role": "assistant", "content": "7"},
    ]
    messages = (
        [{"role": "system", "content": "짧게 답하세요."}]
        + english_chat[1:]
        + [{"role": "user", "content": "그리고 5 더하기 6은?"}]
    )
    for name, tok in (("plain", plain_tokenizer), ("morpheme", small_tokenizer)):
        make_checkpoint(tmp_path / name, tok)
        stale = tmp_path / f"hf-{name}"  # what an earlier save_pretrained left here is read first
        stale.mkdir()
        (stale / "chat_template.jinja").write_text('STALE {{ messages[0]["content"] }}')
        (stale / "tokenizer.json").write_text("{}")
        convert.export_hf(str(tmp_path / name), str(tmp_path / f"hf-{name}"))
        assert not {"chat_template.jinja", "tokenizer.json"} & set(os.listdir(stale))
        hf_tok = transformers.AutoTokenizer.from_pretrained(
            str(tmp_path / f"hf-{name}"), local_files_only=True
        )
        assert hf_tok.decode(tok.encode(BILINGUAL)) == BILINGUAL
        english = "The law applies to everyone.\ndef add(a, b):\n    return a + b\n"
        assert hf_tok.encode(english, add_special_tokens=False) == tok.encode(english)
        assert hf_tok.encode("Hi") == [tok.bos_id] + tok.encode("Hi")  # add_bos_token, as Llama
        ids = hf_tok.apply_chat_template(
            english_chat, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert list(ids) == tok.render_chat(english_chat, add_generation_prompt=True)[0]
        # in transformers the special tokens are added tokens: typed text becomes them (ours keeps
        # it text)
        assert hf_tok.encode("<|user|>", add_special_tokens=False) == [tok.user_id]
        # every control id is special, the segmentation marker (id 11) too: skipped when asked
        controls = [i for i in range(tok.vocab_size) if tok.sp.is_control(i)]
        assert hf_tok.decode(controls + tok.encode("Hi"), skip_special_tokens=True) == "Hi"
    hf_tok = transformers.AutoTokenizer.from_pretrained(
        str(tmp_path / "hf-plain"), local_files_only=True
    )
    assert hf_tok.encode(BILINGUAL, add_special_tokens=False) == plain_tokenizer.encode(BILINGUAL)
    ids = hf_tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert list(ids) == plain_tokenizer.render_chat(messages)[0]


# --- importing a Llama folder written by transformers itself --------------------------------------


def foreign_tokenizer(path, vocab_size=200):
    """A sentencepiece model trained the usual way (not by tokenizer.py): no minihcx control
    tokens."""
    model = io.BytesIO()
    text = [
        json.loads(line)["text"]
        for line in open(
            os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer", "en.jsonl"),
            encoding="utf-8",
        )
    ]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


@pytest.mark.parametrize("tied", [False, True])
def test_import_sharded_transformers_checkpoint(tmp_path, tied, capsys):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    torch.manual_seed(1)
    config = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=48,
        intermediate_size=100,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=0.03,
        rope_parameters={"rope_type": "default", "rope_theta": 321.0},
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(str(tmp_path / "hf"), max_shard_size="40KB")  # several shards + an index
    assert os.path.exists(tmp_path / "hf" / "model.safetensors.index.json")
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        convert.import_hf(str(tmp_path / "hf"), str(tmp_path / "ours"))
    convert.import_hf(str(tmp_path / "hf"), str(tmp_path / "ours"), skip_tokenizer=True)
    model, config_ours = load_model(str(tmp_path / "ours"))
    assert (
        config_ours["model"]["ffn_hidden"] == 100 and config_ours["model"]["tie_embeddings"] == tied
    )
    assert config_ours["model"]["norm_eps"] == 0.03 and config_ours["model"]["rope_theta"] == 321.0
    assert config_ours["special_ids"] == {"pad": None, "bos": 1, "eos": 2}
    idx = torch.randint(300, (2, 20))
    with torch.no_grad():
        assert (model(idx)[0] - hf(idx).logits).abs().max().item() <= 1e-4
    # a foreign sentencepiece model imports with a warning (it lacks our control tokens)
    foreign_tokenizer(tmp_path / "hf" / "tokenizer.model")
    convert.import_hf(str(tmp_path / "hf"), str(tmp_path / "ours2"), dtype="bfloat16")
    assert "not trained by tokenizer.py" in capsys.readouterr().err
    assert os.path.exists(tmp_path / "ours2" / "tokenizer.model")
    state = torch.load(tmp_path / "ours2" / "model.pt", weights_only=True)
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    # tied: one tensor under both names, so the bf16 file holds the embedding once
    assert (state["lm_head.weight"].data_ptr() == state["embed_tokens.weight"].data_ptr()) == tied


def test_import_llama2_style_sharded_bin_with_old_fields(tmp_path):
    """The layout of older public checkpoints: fp16 pytorch_model-0000x-of-00002.bin shards with an
    index, rotary inv_freq buffers among the weights, and a config.json without num_key_value_heads,
    rope_theta, rope_parameters or tie_word_embeddings (each falls back to Llama's default), plus
    pretraining_tp."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=88,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
        )
    ).eval()
    state = {k: v.half() for k, v in hf.state_dict().items()}
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 8, 2).float() / 8))
    names = sorted(state) + [f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(2)]
    state |= {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq for i in range(2)}
    hf_dir = tmp_path / "llama2"
    hf_dir.mkdir()
    shards = {name: f"pytorch_model-0000{1 + k % 2}-of-00002.bin" for k, name in enumerate(names)}
    for shard in sorted(set(shards.values())):
        torch.save({n: state[n] for n in names if shards[n] == shard}, hf_dir / shard)
    (hf_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": shards}))
    (hf_dir / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "vocab_size": 256,
                "hidden_size": 32,
                "intermediate_size": 88,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "hidden_act": "silu",
                "max_position_embeddings": 64,
                "rms_norm_eps": 1e-5,
                "rope_scaling": None,
                "pretraining_tp": 1,
                "torch_dtype": "float16",
                "bos_token_id": 1,
                "eos_token_id": 2,
            }
        )
    )
    foreign_tokenizer(hf_dir / "tokenizer.model")
    convert.import_hf(str(hf_dir), str(tmp_path / "ours"))
    model, config = load_model(str(tmp_path / "ours"))
    assert config["model"]["n_kv_heads"] == 4 and config["model"]["tie_embeddings"] is False
    hf = hf.half().float()  # the fp16 rounding the file holds
    idx = torch.randint(256, (2, 24))
    with torch.no_grad():
        assert (model(idx)[0] - hf(idx).logits).abs().max().item() <= 1e-4


# --- bad input: clear errors, nothing lost --------------------------------------------------------


def _hf_folder(tmp_path, tok, **config_changes):
    make_checkpoint(tmp_path / "ckpt", tok)
    convert.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"), use_safetensors=False)
    path = tmp_path / "hf" / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(config_changes)
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(tmp_path / "hf")


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling"),
        (
            dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}),
            "RoPE scaling",
        ),
        (dict(attention_bias=True), "attention_bias"),
        (dict(mlp_bias=True), "mlp_bias"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(head_dim=16), "head_dim"),
        (dict(model_type="gpt2", architectures=["GPT2LMHeadModel"]), "only Llama"),
        (dict(num_attention_heads=5, head_dim=None), "divisible"),
        (dict(intermediate_size=64), "do not fit"),
    ],
)
def test_import_refuses_unsupported_features_by_name(tmp_path, small_tokenizer, change, message):
    hf_dir = _hf_folder(tmp_path, small_tokenizer, **change)
    with pytest.raises(ValueError, match=message) as e:
        convert.import_hf(hf_dir, str(tmp_path / "out"))
    assert "config.json" in str(e.value) or hf_dir in str(e.value)
    assert not os.path.exists(tmp_path / "out")


def test_missing_files_are_named(tmp_path, small_tokenizer):
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert.import_hf(str(tmp_path), str(tmp_path / "out"))
    hf_dir = _hf_folder(tmp_path, small_tokenizer)
    os.remove(os.path.join(hf_dir, "pytorch_model.bin"))
    with pytest.raises(FileNotFoundError, match="model.safetensors.*pytorch_model.bin"):
        convert.import_hf(hf_dir, str(tmp_path / "out"))
    with open(os.path.join(hf_dir, "pytorch_model.bin.index.json"), "w") as fh:
        json.dump({"weight_map": {"lm_head.weight": "pytorch_model-00001-of-00002.bin"}}, fh)
    with pytest.raises(FileNotFoundError, match="pytorch_model-00001-of-00002.bin"):
        convert.import_hf(hf_dir, str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="model.pt"):
        convert.export_hf(str(tmp_path / "nothing"), str(tmp_path / "out"))
    os.remove(os.path.join(find_checkpoint(str(tmp_path / "ckpt")), "tokenizer.model"))
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        convert.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "out"))


def test_refuses_to_convert_over_its_input_or_the_other_format(tmp_path, small_tokenizer):
    hf_dir = _hf_folder(tmp_path, small_tokenizer)
    ckpt = str(tmp_path / "ckpt")

    def snapshot():  # the files, and through the root links of a run folder its published save
        paths = [os.path.join(d, p) for d in (ckpt, hf_dir) for p in os.listdir(d)]
        return {p: open(p, "rb").read() for p in paths if os.path.isfile(p)}

    before = snapshot()
    for src, out in ((ckpt, ckpt), (hf_dir, hf_dir)):
        with pytest.raises(ValueError, match="output folder is the input folder"):
            (convert.export_hf if src == ckpt else convert.import_hf)(src, out)
    make_checkpoint(tmp_path / "other", small_tokenizer)
    with pytest.raises(ValueError, match="model.pt"):  # an export over another checkpoint
        convert.export_hf(ckpt, str(tmp_path / "other"))
    convert.export_hf(str(tmp_path / "other"), str(tmp_path / "hf2"), use_safetensors=False)
    with pytest.raises(ValueError, match="pytorch_model.bin"):  # an import over another HF folder
        convert.import_hf(hf_dir, str(tmp_path / "hf2"))
    # an import over a training run (`--to-hf out/sft X` then `--from-hf X out/sft`) would have
    # made its step-0 save the run's latest and removed the run's saves
    other = str(tmp_path / "other")
    saves = sorted(os.listdir(other))
    with pytest.raises(ValueError, match="holds a trained checkpoint"):
        convert.import_hf(str(tmp_path / "hf2"), other)
    assert sorted(os.listdir(other)) == saves
    convert.import_hf(hf_dir, str(tmp_path / "again"))  # an earlier import may be replaced
    convert.import_hf(str(tmp_path / "hf2"), str(tmp_path / "again"))
    assert snapshot() == before


def test_import_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path, small_tokenizer):
    # config says 300, tokenizer has 1201
    hf_dir = _hf_folder(tmp_path, small_tokenizer, vocab_size=300)
    with pytest.raises(ValueError, match="1201 pieces but .*vocab_size 300"):
        convert.import_hf(hf_dir, str(tmp_path / "out"))


def test_export_replaces_an_older_export_of_the_other_weights_format(tmp_path, small_tokenizer):
    pytest.importorskip("safetensors")
    make_checkpoint(tmp_path / "ckpt", small_tokenizer)
    convert.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"), use_safetensors=True)
    convert.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"), use_safetensors=False)
    assert not os.path.exists(tmp_path / "hf" / "model.safetensors")  # it would shadow the new .bin
    assert os.path.exists(tmp_path / "hf" / "pytorch_model.bin")
    assert not [n for n in os.listdir(tmp_path / "hf") if ".tmp-" in n]


def test_failed_export_leaves_previous_export_intact(tmp_path, small_tokenizer, monkeypatch):
    make_checkpoint(tmp_path / "ckpt", small_tokenizer)
    convert.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"), use_safetensors=False)
    before = {name: (tmp_path / "hf" / name).read_bytes() for name in os.listdir(tmp_path / "hf")}
    # new weights, then the export fails mid-way
    make_checkpoint(tmp_path / "ckpt", small_tokenizer, seed=5)

    def failing_copy(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(convert.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        convert.export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"), use_safetensors=False)
    after = {name: (tmp_path / "hf" / name).read_bytes() for name in os.listdir(tmp_path / "hf")}
    assert after == before  # same files, same bytes, no temporaries left behind


def test_cli(tmp_path, small_tokenizer, capsys):
    make_checkpoint(tmp_path / "ckpt", small_tokenizer)
    convert.main(["--to-hf", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--format", "bin"])
    assert "pytorch_model.bin" in capsys.readouterr().out
    convert.main(["--from-hf", str(tmp_path / "hf"), str(tmp_path / "back")])
    assert "2 layers, dim 32" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="convert: .*config.json: missing"):
        convert.main(["--from-hf", str(tmp_path / "nowhere"), str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        convert.main(["--to-hf", str(tmp_path / "ckpt")])  # needs two folders
    for wrong in (
        ["--to-hf", str(tmp_path / "ckpt"), str(tmp_path / "x"), "--skip-tokenizer"],
        ["--from-hf", str(tmp_path / "hf"), str(tmp_path / "x"), "--format", "bin"],
    ):
        with pytest.raises(SystemExit):
            convert.main(wrong)
        assert "applies to" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        convert.main(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--to-hf", "--from-hf", "--dtype", "--format", "--skip-tokenizer"):
        assert flag in help_text
