"""
bench_model.py - throughput of model.py next to Hugging Face LlamaForCausalLM holding the same
weights. A tool, not a paper section: it times the HCX §2.1 model that every stage trains and
samples.

Prints, for the CPU demo size (6 layers, dim 256, GQA 8/4, vocab 4096, T=256, B=16, 2 threads by
default):
  - the machine's fp32 matmul rate (best of several square GEMMs), the ceiling for MFU
  - training tokens/s (forward + backward + AdamW step), ours vs HF, and our achieved FLOP/s as a
    share of that rate (FLOPs/token from Transformer.flops_per_token: 6 per matmul weight + causal
    attention), first with glibc's default allocator, then after keep_freed_memory() (no page
      faults)
  - the decode limit: one matrix-vector product over every weight matrix a decode step reads, by
    MKL in the model's (out, in) layout and transposed, and as inductor's compiled loop, timed
    again within the batch-1 decode rounds
  - prefill tokens/s (one cached forward over a batch of prompts) at batch 1 and 8
  - greedy-decode tokens/s (new tokens over the whole generate call) at batch 1, 8 and 32: ours
    eager, ours with the compiled decode step (generate(compile=True)), HF generate(); the compile
    time apart, the compiled rate with it counted over this bench's calls, and when compiling pays
    (cold: inductor's on-disk cache of compiled code is a fresh one unless --warm-cache; a later
    run of a script on the same machine reads the code from that cache, ~4 s instead of ~25 s)
Ours and HF run interleaved, round by round, so a busy shared machine slows both alike. Each figure
is the best round (the one least disturbed by other processes; --stat median for the median round),
and the ratios are what to read. Needs transformers (requirements-test.txt).

Run:
  python bench_model.py                       # the demo size, ~2 minutes on 2 cores
  python bench_model.py --threads 4 --rounds 5
  python bench_model.py --preset tiny --batch-size 4 --seq-len 64    # a quick smoke run
  python bench_model.py --no-train --threads 1 --stat median --rounds 3    # decode only

Where compiling the decode step pays (demo size, 1 thread on a 2-core VM, cold compile, --stat
median; 2026-12-02, commit 36c8ee3, the C++ wrapper): it costs 31-33 s per (batch, cache length)
bucket and makes a 128-token call 1.80x (batch 1), 1.47x (8) and 1.15x (32) faster than eager, so
it pays after ~35-56 such calls: SELF-JUDGE's sampler and evaluation, not one chat reply, hence
eager by default. Against HF generate, compiled: 1.89x (batch 1, 53 % of the matvec limit), 1.66x
(8), 1.41x (32); eager 1.05-1.22x. (The same bench at 92cdf7e on a faster VM: 2.55x, 1.96x, 1.47x.
Compiled, K is cached (B, KV, S, hd): eager's transposed K made it 1.5x slower at batch 32.)
Cold and warm (2026-12-02, commit 9bd2c0a, 2 threads, an AMD EPYC VM, --stat median --rounds 3):
a cold compile costs 23.5 s (batch 1), 15.8 s (8) and 15.0 s (32); rerun with --warm-cache, the
batch-1 step is read from inductor's disk cache in 3.5 s. Compiled against HF: 1.86x at batch 1
(254 tokens/s, 63 % of the 2.48 ms limit), 1.44x at 8, 1.45x at 32.
Batch 1 (2026-12-04): MKL's matrix-vector product is not what memory allows. The same 21.9 MB as
one multiply-and-sum that inductor writes as its own vectorised loop take 0.17 ms (128 GB/s, from
the 32 MB L3) against MKL's 0.6-0.9 ms, so under compile model.Linear computes one row that way,
and attention its two small products (7-9 % more at every batch size). --no-train --rounds 3 --stat
median, one VM, before (7886d26) / after: 2 threads 478 -> 1,558 and 1,070 tokens/s (two runs),
1.54x -> 5.35x and 3.77x HF, 49 % -> 118 % and 138 % of MKL's limit, 34 % and 39 % of the loop's; 1
thread 554 -> 965, 1.63x -> 3.74x HF, 40 % -> 130 % (46 % of the loop's). Batch 8 1.88x -> 2.00x
and 1.84x HF at 2 threads (three more runs: 2.00x, 2.03x, 1.98x), 1.33x -> 1.61x at 1; batch 32
1.29x -> 1.48x and 1.49x. Where a compiled step goes now (torch.profiler with inductor's kernel
profile, 2 threads): batch 1, 0.47 ms: the fused weight loops ~0.25, the graph's C++ wrapper ~0.14,
TorchDynamo's guard check ~0.08; batch 8, 2.0 ms: MKL's 43 products 1.25, attention's loops 0.35,
the wrapper 0.31, the guards 0.17. At 8 rows the loops lose: inductor splits a product with few
outputs (down_proj's 256) over its 704 summed terms, one parallel region per output (the MLP 336
against 165 us with MKL).
At batch 8 (profiled the same way, commit 36c8ee3) the weight matmuls took 5.7 ms of the compiled
step's 8.6, 2.5x the matvec limit though each weight is read once: MKL's sgemm splits x W^T with 8
rows badly across threads. So model.Linear computes 2-64 rows as (W x^T)^T, the same product with
the weight as the long operand (the 43 weights at 8 rows: 1.9 against 3.4 ms at 2 threads, 3.5
against 4.5 at 1). 2026-12-03, 2 threads, --stat median --rounds 3, compiled
against HF before / after on one VM: 1.51x / 2.51x and 2.23x (two runs) at batch 8, 1.43x / 1.65x
and 1.60x at 32; eager at 8 1.07x / 1.38x and 1.16x. The limit is timed again within the batch-1
rounds: on this shared VM it drifted from 0.73 to 1.7 ms between runs (the weights fit the L3 when
other tenants leave it).
"""

import argparse
import atexit
import ctypes
import os
import resource
import shutil
import statistics
import tempfile
import time

import torch
from torch._inductor.runtime.cache_dir_utils import cache_dir

from convert import hf_llama_config_dict, to_hf_state_dict
from model import Transformer, config_from_preset, generate


def compile_model(model: torch.nn.Module, enabled: bool | None = None) -> torch.nn.Module:
    """torch.compile, by default only on CUDA (on CPU it costs ~30 s of compiling for little gain).
    Save checkpoints from the uncompiled module (`model._orig_mod` of the returned one)."""
    if enabled is None:
        enabled = next(model.parameters()).is_cuda
    return torch.compile(model) if enabled else model


def keep_freed_memory() -> bool:
    """Opt-in CPU speed-up on Linux/glibc: tell malloc to keep freed memory rather than hand it back
    to the OS. By default each large activation is a fresh mmap whose pages fault in one at a time
    (~75K page faults per demo-size training step; ~5K after this call, and 3-6% faster on a 2-core
    VM, measured below). Process-wide; memory stays at its peak.
    Returns False where it does not apply."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # macOS, Windows, musl
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    return (
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1
        and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    )


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an n x n x n matrix product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def timed(fn, n: int = 1) -> float:
    """Seconds per call of fn, over n calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def interleaved(fns: dict, rounds: int, n: int = 1, stat=min) -> dict:
    """Seconds per call of each fn (stat over rounds), run round-robin so machine noise hits all
    alike."""
    for fn in fns.values():  # warm up: allocator, thread pools, (torch.compile)
        fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(timed(fn, n))
    return {k: stat(v) for k, v in times.items()}


def matvec_products(model, compiled: bool = True) -> tuple[dict, float]:
    """The floor of a batch-1 decode step: one matrix-vector product over every weight matrix a
    step reads (all but the embedding table, of which a step reads one row), stacked into one
    matrix so no per-operator cost is counted. Three ways: MKL's product with (out, in) rows as the
    model stores them (the limit the targets use), with (in, out) rows, which MKL streams 1.2-1.6x
    faster at batch 1 here, and (compiled=True) a multiply and sum under torch.compile: inductor's
    own vectorised loop, model.Linear's way for one row under compile, the closest to the rate
    memory gives (the notes above). Returns ({way: one product}, megabytes)."""
    mats = [
        p for name, p in model.named_parameters() if p.dim() == 2 and name != "embed_tokens.weight"
    ]
    dim = model.cfg.dim
    stacked = torch.cat([w.detach().reshape(-1, dim) for w in mats])  # (total / dim, dim)
    stacked_t = stacked.t().contiguous()  # (dim, total / dim)
    x = torch.randn(dim)
    products = {"limit (out,in)": lambda: stacked @ x, "limit (in,out)": lambda: x @ stacked_t}
    if compiled:
        loop = torch.compile(lambda w, v: (v * w).sum(-1), dynamic=False)  # (total / dim,)
        products["limit (loop)"] = lambda: loop(stacked, x)
    return products, stacked.numel() * stacked.element_size() / 1e6


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument(
        "--preset", default="demo", help="model preset from model.PRESETS (default: demo)"
    )
    ap.add_argument("--vocab-size", type=int, default=4096, help="the models' vocabulary")
    ap.add_argument("--batch-size", type=int, default=16, help="training batch (default 16)")
    ap.add_argument(
        "--seq-len", type=int, default=256, help="training sequence length (default 256)"
    )
    ap.add_argument(
        "--prompt-len",
        type=int,
        default=128,
        help="prompt length for prefill and decode (default 128)",
    )
    ap.add_argument(
        "--new-tokens", type=int, default=128, help="greedy tokens generated per row (default 128)"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds per measurement (default 5)"
    )
    ap.add_argument(
        "--stat", choices=["best", "median"], default="best", help="which round to report"
    )
    ap.add_argument(
        "--compile", action="store_true", help="also time our training step under torch.compile"
    )
    ap.add_argument(
        "--compile-decode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time generate(compile=True), the compiled decode step (default on)",
    )
    ap.add_argument(
        "--decode-batches",
        type=lambda s: [int(b) for b in s.split(",")],
        default=[1, 8, 32],
        help="batch sizes for greedy decode (default 1,8,32)",
    )
    ap.add_argument(
        "--no-train", dest="train", action="store_false", help="skip the training figures"
    )
    ap.add_argument(
        "--warm-cache",
        action="store_true",
        help="let torch.compile reuse the compiled code inductor keeps on disk from earlier runs\n"
        "(default: a fresh, empty cache, so the compile times are what a first run pays)",
    )
    args = ap.parse_args()
    if not args.warm_cache:  # read before any compile, so nothing compiled earlier is found
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_inductor_")
        atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], True)
    stat = min if args.stat == "best" else statistics.median

    # test-only dependency, imported late on purpose
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config_from_preset(
        args.preset,
        vocab_size=args.vocab_size,
        max_seq_len=max(args.seq_len, args.prompt_len + args.new_tokens),
    )
    ours = Transformer(cfg)
    hf = LlamaForCausalLM(LlamaConfig(**hf_llama_config_dict(cfg), attn_implementation="sdpa"))
    hf.load_state_dict(to_hf_state_dict(ours.state_dict(), cfg), strict=not cfg.tie_embeddings)
    rate = matmul_rate()
    B, T = args.batch_size, args.seq_len
    flops = ours.flops_per_token(T)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 matmul rate "
        f"{rate / 1e9:.0f} GFLOP/s (2048^3 GEMM, best of 5); torch.compile's code cache: "
        f"{cache_dir()} "
        + ("(as earlier runs left it)" if args.warm_cache else "(fresh: cold compiles)")
    )
    print(
        f"model: preset {args.preset}, vocab {cfg.vocab_size}, dim {cfg.dim}, {cfg.n_layers} "
        f"layers, heads {cfg.n_heads}/{cfg.n_kv_heads}, ffn {cfg.ffn_hidden}, "
        f"{ours.num_params() / 1e6:.2f}M parameters, {flops / 1e6:.1f} MFLOP/token at T={T}"
    )

    # -- training: forward + backward + AdamW step on a fixed random batch ------------------------
    if args.train:
        idx = torch.randint(cfg.vocab_size, (B, T + 1))

        def train_step(model, loss_fn):
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step():
                loss = loss_fn(model)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            return step

        steps = {
            "ours": train_step(ours.train(), lambda m: m(idx[:, :-1], idx[:, 1:])[1]),
            "hf": train_step(
                hf.train(), lambda m: m(input_ids=idx[:, :-1], labels=idx[:, :-1]).loss
            ),
        }
        if args.compile:
            t0 = time.perf_counter()
            compiled = compile_model(ours, True)
            steps["ours+compile"] = train_step(compiled, lambda m: m(idx[:, :-1], idx[:, 1:])[1])
            steps["ours+compile"]()
            print(f"torch.compile warm-up: {time.perf_counter() - t0:.0f} s")
        for allocator in ("glibc default", "keep_freed_memory()"):
            if allocator != "glibc default" and not keep_freed_memory():
                print("\n(keep_freed_memory() does not apply here: no glibc)")
                break
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            steps["ours"]()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            sec = interleaved(steps, args.rounds, n=2, stat=stat)
            print(
                f"\ntraining, B={B} T={T}, allocator: {allocator} ({faults} page faults in one "
                f"step of ours), {args.stat} of {args.rounds} rounds"
            )
            for k, s in sec.items():
                print(
                    f"  {k:14s} {B * T / s:8.0f} tokens/s   "
                    f"{B * T * flops / s / 1e9:6.1f} GFLOP/s = "
                    f"{100 * B * T * flops / s / rate:4.1f}% of matmul rate"
                )
            print(
                f"  ours / hf: {sec['hf'] / sec['ours']:.2f}x  (target >= 1.25x, and >= 75% of "
                f"the matmul rate)"
            )
            if "ours+compile" in sec:
                print(f"  ours+compile / hf: {sec['hf'] / sec['ours+compile']:.2f}x")
    ours.eval(), hf.eval()
    # re-sync
    hf.load_state_dict(to_hf_state_dict(ours.state_dict(), cfg), strict=not cfg.tie_embeddings)

    # -- prefill and greedy decode -----------------------------------------------------------------
    P, N = args.prompt_len, args.new_tokens
    products, mb = matvec_products(ours, compiled=args.compile_decode)
    limit = {k: min(timed(fn, 200) for _ in range(5)) for k, fn in products.items()}
    ways = {
        "limit (out,in)": "as MKL reads them in the model's (out, in) rows (the limit)",
        "limit (in,out)": "stored transposed",
        "limit (loop)": "as inductor's compiled multiply-and-sum loop",
    }
    print(
        f"\nthe limit: one matrix-vector product over every weight a decode step reads (all "
        f"matrices but the embedding table, {mb:.1f} MB), at batch 1: "
        + "; ".join(
            f"{ways[way]} {s * 1e3:.2f} ms ({1 / s:.0f} tokens/s, {mb / 1e3 / s:.0f} GB/s)"
            for way, s in limit.items()
        )
        + ". Timed again within each batch-1 decode round below, so a drifting machine moves all "
        "alike"
    )
    for batch in args.decode_batches:
        prompt = torch.randint(cfg.vocab_size, (batch, P))
        if batch in (1, 8):

            def prefill_ours():
                with torch.no_grad():
                    ours.setup_cache(batch, P)
                    ours(prompt, start_pos=0)

            def prefill_hf():
                with torch.no_grad():
                    hf(input_ids=prompt, use_cache=True)

            sec = interleaved({"ours": prefill_ours, "hf": prefill_hf}, args.rounds, n=5, stat=stat)
            print(
                f"\nprefill, batch {batch} x {P} tokens: ours {batch * P / sec['ours']:.0f} "
                f"tokens/s, hf {batch * P / sec['hf']:.0f} tokens/s, ours / hf "
                f"{sec['hf'] / sec['ours']:.2f}x"
            )

        outs = {}

        def decode_ours(compile=False):
            outs[f"compile={compile}"] = generate(
                ours, prompt.tolist(), N, temperature=0, compile=compile
            )

        fns = {"ours": decode_ours}
        if args.compile_decode:
            t0 = time.perf_counter()
            decode_ours(compile=True)  # the first call at this shape compiles the decode step
            first = time.perf_counter() - t0
            fns["ours+compile"] = lambda: decode_ours(compile=True)

        def decode_hf():
            out = hf.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=N,
                min_new_tokens=N,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
            outs["hf"] = out[:, P:].tolist()

        fns["hf"] = decode_hf
        if batch == 1:  # the limit, N products a round, in the same rounds as the decoders
            fns.update({k: lambda fn=fn: [fn() for _ in range(N)] for k, fn in products.items()})

        sec = interleaved(fns, args.rounds, stat=stat)
        rate = {k: batch * N / s for k, s in sec.items()}
        same = all(o == outs["hf"] for o in outs.values())  # the decoders' tokens
        print(
            f"\ngreedy decode, batch {batch}, {P} prompt + {N} new tokens, new tokens/s over the "
            f"whole generate call; same tokens in all: {same}"
        )
        for k, r in rate.items():
            share = ""
            if batch == 1 and not k.startswith(("hf", "limit")):
                share = "".join(f", {100 * r / rate[way]:.0f}% of {way}" for way in products)
            print(f"  {k:14s} {r:8.0f} tokens/s   {r / rate['hf']:.2f}x hf{share}")
        if "ours+compile" in sec:
            compile_s = first - sec["ours+compile"]
            calls = args.rounds + 2  # this bench's calls at this shape: first, warm-up, rounds
            amortised = calls * batch * N / (compile_s + calls * sec["ours+compile"])
            gain = sec["ours"] - sec["ours+compile"]
            pays = (
                f"pays for itself after {compile_s / gain:.0f} calls like this one"
                if gain > 0
                else "never pays here"
            )
            print(
                f"  compile time {compile_s:.1f} s (first call {first:.1f} s minus a warm call); "
                f"counted over this bench's {calls} calls: {amortised:.0f} tokens/s; "
                f"compiling {pays}"
            )


if __name__ == "__main__":
    main()
