#!/usr/bin/env python3
"""Optim's fused SGD and Adam/AdamW, through the C ABI (ctypes), against PyTorch's own.

  torch_harness.py parity [--device auto|cpu|cuda] [--steps 60] [--require-fused] [--lib PATH]
                          [--markdown FILE]
      Every flag combination in float32 and float64, over many tensors (empty ones, ones of
      several 64 Ki-element chunks, more than one CUDA launch's table; on CUDA one of 22M
      elements), stepped side by side with torch.optim.SGD in each of its implementations that
      this PyTorch has for the device (fused, foreach, for-loop); parameters and momentum buffers
      compared at the end. Our rate alternates between a value and a pointer (lr_ptr) to a
      float64 tensor on the device. Then Adam and AdamW likewise: the 12 combinations of decay
      (none, L2, decoupled), amsgrad and maximize against torch.optim.Adam/AdamW in each
      implementation, parameters and every moment compared. Works with PyTorch 1.13 (Debian's,
      CPU) and recent ones.
      --require-fused: fail when SGD(fused=True) or Adam(fused=True) is unavailable (the GPU
      check asks for them).
  torch_harness.py bench [--device auto|cpu|cuda] [--params 1M,10M,100M] [--tensors 4,1000]
                         [--rounds 15] [--lib PATH] [--markdown FILE]
      Float32 steps of ours vs SGD(fused=True) vs SGD(foreach=True), then of our AdamW vs
      AdamW(fused=True) vs AdamW(foreach=True), interleaved rounds, medians (CUDA events; on the
      CPU, the wall clock and whichever of the two exist). On CUDA both are required.

Exit codes: 0 passed, 1 failed (or no CUDA where it was asked for), 2 bad usage.
"""

import argparse
import inspect
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import optim_abi  # noqa: E402

LR = 0.05
ADAM_LR = 0.01
# After 60 steps from the same start: rounding differences only (a wrong term is of order lr * g).
TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12)}


def flag_configs():
    """The 12 reachable flag combinations (Nesterov needs momentum), named as in optim_gpu_check."""
    for maximize in (False, True):
        for wd in (0.0, 1e-2):
            for kind in ("plain", "momentum", "nesterov"):
                c = dict(
                    momentum=0.0 if kind == "plain" else 0.9,
                    dampening=0.25 if kind == "momentum" and not maximize else 0.0,
                    weight_decay=wd,
                    nesterov=kind == "nesterov",
                    maximize=maximize,
                )
                name = kind + ("+dampening" if c["dampening"] else "")
                name += ("+weight_decay" if wd else "") + ("+maximize" if maximize else "")
                yield name, c


def supports(cls, option):
    return option in inspect.signature(cls.__init__).parameters


def torch_variants(cls, device, dtype, **probe):
    """[(name, kwargs)] of the implementations of optimizer class `cls` that this PyTorch runs on
    `device`, and {name: reason} of those it does not (probed with one step, `probe` its
    hyperparameters)."""
    candidates = []
    if supports(cls, "fused"):
        candidates.append(("fused", dict(fused=True)))
    if supports(cls, "foreach"):
        candidates.append(("foreach", dict(foreach=True)))
        candidates.append(("for-loop", dict(foreach=False)))
    else:
        candidates.append(("for-loop", {}))
    usable, missing = [], {}
    if not supports(cls, "fused"):
        missing["fused"] = f"torch {torch.__version__} has no {cls.__name__}(fused=...)"
    for name, kw in candidates:
        try:
            p = torch.nn.Parameter(torch.zeros(3, device=device, dtype=dtype))
            p.grad = torch.ones_like(p)
            cls([p], lr=0.1, **probe, **kw).step()
            usable.append((name, kw))
        except (RuntimeError, ValueError, TypeError) as e:
            missing[name] = str(e).splitlines()[0]
    return usable, missing


def sgd_variants(device, dtype):
    return torch_variants(torch.optim.SGD, device, dtype, momentum=0.9)


def adam_configs():
    """The 12 combinations of decay (none, L2: Adam, decoupled: AdamW), amsgrad and maximize:
    (name, torch class, keyword arguments of both sides)."""
    for maximize in (False, True):
        for amsgrad in (False, True):
            for decay in ("none", "l2", "decoupled"):
                name = ("adamw" if decay == "decoupled" else "adam")
                name += ("+weight_decay" if decay != "none" else "") + ("+amsgrad" if amsgrad else "")
                name += "+maximize" if maximize else ""
                cls = torch.optim.AdamW if decay == "decoupled" else torch.optim.Adam
                yield name, cls, dict(weight_decay=0.0 if decay == "none" else 1e-2,
                                      amsgrad=amsgrad, maximize=maximize)


def optim_dtype(dtype):
    return optim_abi.DTYPE_FLOAT32 if dtype == torch.float32 else optim_abi.DTYPE_FLOAT64


def optim_device(device):
    return optim_abi.DEVICE_CUDA if device == "cuda" else optim_abi.DEVICE_CPU


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def parity_sizes(device):
    special = [0, 1, 3, 17, 31, 32, 33, 1000, 4097, 65535, 65536, 65537, 70001, 0]
    g = torch.Generator().manual_seed(5)
    sizes = special + [int(x) for x in torch.randint(1, 3000, (26,), generator=g)]
    if device == "cuda":
        sizes.append(22_000_007)  # more 64 Ki-element chunks than one CUDA launch has blocks
    return sizes


def compare(what, ours, theirs, dtype, problems):
    rtol, atol = TOLERANCE[dtype]
    close = torch.isclose(ours, theirs, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return
    bad = (~close).nonzero().flatten()
    for i in bad[:3].tolist():
        problems.append(f"{what} [{i}]: ours {ours[i].item():.9g}, torch {theirs[i].item():.9g}")
    problems.append(f"{what}: {bad.numel()} of {ours.numel()} values differ")


def parity_case(lib, device, dtype, config, variant_kw, steps, seed):
    """Steps ours and torch's SGD side by side; returns a list of problems (empty: passed)."""
    sizes = parity_sizes(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    start = [torch.randn(n, generator=gen, device=device, dtype=dtype) for n in sizes]
    ours = [t.clone() for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    momentum = config["momentum"] != 0
    buffers = [torch.zeros_like(t) for t in start] if momentum else None
    opt = torch.optim.SGD(theirs, lr=LR, **config, **variant_kw)
    lr_tensor = torch.tensor([LR], dtype=torch.float64, device=device)
    # One flat gradient per step for each side, seen by the tensors through views.
    flat = torch.zeros(sum(sizes), device=device, dtype=dtype)
    flat_theirs = torch.zeros_like(flat)
    grads = list(flat.split(sizes))
    for p, g in zip(theirs, flat_theirs.split(sizes)):
        p.grad = g
    first = optim_abi.tensor_list(ours, grads, buffers, fresh=[True] * len(sizes))
    later = optim_abi.tensor_list(ours, grads, buffers)
    # Each step's gradient is a window of one random pool, shifted (cheaper than drawing anew).
    pool = torch.rand(flat.numel() + 65536, generator=gen, device=device, dtype=dtype) - 0.5
    for step in range(steps):
        shift = step * 7919 % 65536
        flat.copy_(pool[shift:shift + flat.numel()])
        flat_theirs.copy_(flat)
        opt.step()
        lr_ptr = lr_tensor.data_ptr() if step % 2 else None
        params = optim_abi.sgd_params(LR, lr_ptr=lr_ptr, **config)
        lib.sgd_step(optim_device(device), optim_dtype(dtype), first if step == 0 else later,
                     params)
    sync(device)
    problems = []
    for k, (o, t) in enumerate(zip(ours, theirs)):
        compare(f"param tensor {k}", o, t.detach(), dtype, problems)
        if momentum:
            compare(f"momentum buffer tensor {k}", buffers[k],
                    opt.state[t]["momentum_buffer"], dtype, problems)
    return problems


def adam_parity_case(lib, device, dtype, cls, config, variant_kw, steps, seed):
    """Steps ours and torch's Adam or AdamW side by side; returns a list of problems. Gradients
    are kept at least 0.1 away from zero: Adam's first direction g / (|g| + eps) turns the last bit
    of a gradient near eps into a change of order lr, so a gradient there (PyTorch's CUDA kernels
    round g + weight_decay * p in one fused multiply-add, ours in two steps) would test rounding,
    not the step."""
    sizes = parity_sizes(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    start = [torch.randn(n, generator=gen, device=device, dtype=dtype) for n in sizes]
    ours = [t.clone() for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    moments = [[torch.zeros_like(t) for t in start] for _ in range(3)]
    opt = cls(theirs, lr=ADAM_LR, **config, **variant_kw)
    decoupled = cls is torch.optim.AdamW
    flat = torch.zeros(sum(sizes), device=device, dtype=dtype)
    flat_theirs = torch.zeros_like(flat)
    grads = list(flat.split(sizes))
    for p, g in zip(theirs, flat_theirs.split(sizes)):
        p.grad = g
    tensors = optim_abi.adam_tensors(ours, grads, *moments)
    params = optim_abi.adam_params(ADAM_LR, weight_decay=config["weight_decay"],
                                   amsgrad=config["amsgrad"], maximize=config["maximize"],
                                   decoupled=decoupled)
    n = flat.numel() + 65536
    magnitude = torch.rand(n, generator=gen, device=device, dtype=dtype) * 0.5 + 0.1
    sign = torch.rand(n, generator=gen, device=device, dtype=dtype) < 0.5
    pool = torch.where(sign, -magnitude, magnitude)
    for step in range(steps):
        shift = step * 7919 % 65536
        flat.copy_(pool[shift:shift + flat.numel()])
        flat_theirs.copy_(flat)
        opt.step()
        optim_abi.set_step(tensors, step + 1)
        lib.adam_step(optim_device(device), optim_dtype(dtype), tensors, params)
    sync(device)
    problems = []
    names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if config["amsgrad"] else [])
    for k, (o, t) in enumerate(zip(ours, theirs)):
        compare(f"param tensor {k}", o, t.detach(), dtype, problems)
        if t.numel() == 0:
            continue
        for name, ours_state in zip(names, moments):
            compare(f"{name} tensor {k}", ours_state[k], opt.state[t][name], dtype, problems)
    return problems


def stream_case(lib, steps):
    """On CUDA: optim_torch_cuda_stream reads torch's current stream (the default one, then a side
    stream), and our steps set to that side stream match torch's SGD run on it (torch writes each
    step's gradients on that stream, so a step launched elsewhere could read stale ones)."""
    problems = []
    default = torch.cuda.current_stream().cuda_stream
    if lib.torch_cuda_stream() != default:
        problems.append(f"current stream: got {lib.torch_cuda_stream():#x}, torch has {default:#x}")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        got = lib.torch_cuda_stream()
        if got != side.cuda_stream:
            problems.append(f"side stream: got {got:#x}, torch has {side.cuda_stream:#x}")
        lib.cuda_set_stream(got)
        try:
            config = dict(momentum=0.9, dampening=0.0, weight_decay=1e-2, nesterov=True,
                          maximize=False)
            problems += parity_case(lib, "cuda", torch.float32, config, {"foreach": True}, steps,
                                    99)
        finally:
            lib.cuda_set_stream(0)
    torch.cuda.synchronize()
    return problems


def describe(device):
    text = f"torch {torch.__version__}"
    if device == "cuda":
        text += f" (CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)})"
    else:
        text += " (CPU)"
    return text


def choose_device(requested):
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("FAILED: --device cuda, but torch.cuda.is_available() is False")
    return requested


def run_parity(args, lib):
    device = choose_device(args.device)
    if device == "cuda" and lib.cuda_device_count() < 1:
        raise SystemExit(f"FAILED: {lib.path} sees no CUDA device ({lib.build_info()})")
    print(f"parity on {device}: {describe(device)}; {lib.build_info()}; {args.steps} steps")
    counts = {"passed": 0, "failed": 0}
    rows, notes = [], []

    def record(label, problems):
        print(("FAIL " if problems else "ok   ") + label)
        for p in problems[:8]:
            print("     " + p)
        counts["failed" if problems else "passed"] += 1
        return not problems

    def unavailable(dname, what, missing):
        for name, reason in missing.items():
            notes.append(f"- {dname}: {what} {name} not used here: {reason}")
            if name == "fused" and args.require_fused:
                record(f"{dname}: {what}(fused=True) is required but unavailable: {reason}", [reason])

    for dtype in (torch.float32, torch.float64):
        dname = str(dtype).replace("torch.", "")
        variants, missing = sgd_variants(device, dtype)
        unavailable(dname, "SGD", missing)
        for vname, kw in variants:
            ok = [record(f"{dname} {cname} vs torch.optim.SGD({vname})",
                         parity_case(lib, device, dtype, config, kw, args.steps, seed))
                  for seed, (cname, config) in enumerate(flag_configs())]
            rows.append(f"| {dname} | SGD({vname}) | {len(ok)} | {sum(ok)} | {len(ok) - sum(ok)} |")
    for dtype in (torch.float32, torch.float64):
        dname = str(dtype).replace("torch.", "")
        variants, missing = torch_variants(torch.optim.Adam, device, dtype)
        unavailable(dname, "Adam", missing)
        for vname, kw in variants:
            ok = [record(f"{dname} {cname} vs torch.optim.{cls.__name__}({vname})",
                         adam_parity_case(lib, device, dtype, cls, config, kw, args.steps,
                                          100 + seed))
                  for seed, (cname, cls, config) in enumerate(adam_configs())]
            rows.append(f"| {dname} | Adam/AdamW({vname}) | {len(ok)} | {sum(ok)} | "
                        f"{len(ok) - sum(ok)} |")
    if device == "cuda":
        ok = record("torch's current stream read and followed (optim_torch_cuda_stream, "
                    "optim_cuda_set_stream; nesterov float32 on a side stream)",
                    stream_case(lib, args.steps))
        rows.append(f"| float32 | SGD(foreach) on torch's side stream | 1 | {int(ok)} "
                    f"| {int(not ok)} |")
    md = (f"Ours through the C ABI (ctypes, data_ptr()) against torch.optim.SGD, Adam and AdamW on "
          f"{device}, {describe(device)}: 12 flag combinations per row, {args.steps} steps, "
          f"{len(parity_sizes(device))} tensors, parameters, momentum buffers and moments compared "
          f"(rtol/atol: float32 {TOLERANCE[torch.float32]}, float64 {TOLERANCE[torch.float64]})."
          "\n\n| dtype | torch | cases | passed | failed |\n|---|---|---:|---:|---:|\n"
          + "\n".join(rows) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    write(args.markdown, md)
    print(f"\nparity: {counts['passed']} passed, {counts['failed']} failed")
    return 0 if counts["failed"] == 0 else 1


def median(values):
    s = sorted(values)
    return s[len(s) // 2]


def split(params, tensors):
    return [params // tensors + (1 if k < params % tensors else 0) for k in range(tensors)]


# The timed steps: (name, bytes moved per parameter, torch class, torch's arguments). Ours takes
# the same hyperparameters through the C ABI.
BENCH_STEPS = [
    ("SGD momentum", 20, torch.optim.SGD, dict(lr=1e-9, momentum=0.9)),
    ("SGD", 12, torch.optim.SGD, dict(lr=1e-9)),
    ("AdamW", 28, torch.optim.AdamW, dict(lr=1e-9, weight_decay=1e-2)),
]


def bench_size(lib, device, variants, total, tensors, step, rounds):
    """Median ms per step of ours and of each torch variant at one size (float32)."""
    name, per_param, cls, kw = step
    sizes = split(total, tensors)

    def filled(value):
        return [torch.full((n,), value, device=device) for n in sizes]

    p, g = filled(1.0), filled(1e-3)
    if cls is torch.optim.SGD:
        b = filled(0.0) if kw.get("momentum") else None
        tl = optim_abi.tensor_list(p, g, b)
        params = optim_abi.sgd_params(kw["lr"], momentum=kw.get("momentum", 0.0))

        def ours():
            lib.sgd_step(optim_device(device), optim_abi.DTYPE_FLOAT32, tl, params)
    else:
        at = optim_abi.adam_tensors(p, g, filled(0.0), filled(0.0))
        optim_abi.set_step(at, 10)
        params = optim_abi.adam_params(kw["lr"], weight_decay=kw["weight_decay"], decoupled=True)

        def ours():
            lib.adam_step(optim_device(device), optim_abi.DTYPE_FLOAT32, at, params)

    contenders = {"ours": ours}
    for vname, vkw in variants:
        ps = [torch.nn.Parameter(t) for t in filled(1.0)]
        for t in ps:
            t.grad = torch.full_like(t, 1e-3)
        contenders[vname] = cls(ps, **kw, **vkw).step
    nbytes = per_param * total
    reps = max(1, min(200, int(2e9 / nbytes)))
    times = {c: [] for c in contenders}
    for r in range(-2, rounds):  # two warm-up rounds
        for c, run in contenders.items():
            elapsed = timed(run, reps, device)
            if r >= 0:
                times[c].append(elapsed / reps)
    return {c: median(t) for c, t in times.items()}, nbytes


def timed(run, reps, device):
    """Milliseconds of `reps` calls: CUDA events on the GPU, the wall clock on the CPU."""
    if device == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            run()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop)
    t0 = time.perf_counter()
    for _ in range(reps):
        run()
    return (time.perf_counter() - t0) * 1e3


def parse_counts(text):
    out = []
    for item in text.split(","):
        scale = {"K": 1_000, "M": 1_000_000}.get(item[-1:], 1)
        out.append(int(float(item[:-1] if scale > 1 else item) * scale))
    return out


def human(n):
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else str(n)


def run_bench(args, lib):
    device = choose_device(args.device)
    print(f"bench on {device}: {describe(device)}; {lib.build_info()}")
    timer = "CUDA events" if device == "cuda" else "wall clock"
    md = (f"Float32 on {device}, {describe(device)}; median ms per step of {args.rounds} "
          f"interleaved rounds ({timer}; short steps timed over many calls); ours is one ctypes "
          "call of optim_sgd_step or optim_adam_step, torch's is optimizer.step(). GB/s counts the "
          "bytes a step must move per parameter: 20 (SGD momentum), 12 (SGD), 28 (AdamW); "
          "\"x / ours\" above 1 means ours is faster.\n")
    for family in ("SGD", "AdamW"):
        cls = torch.optim.SGD if family == "SGD" else torch.optim.AdamW
        probe = dict(momentum=0.9) if family == "SGD" else {}
        usable, missing = torch_variants(cls, device, torch.float32, **probe)
        variants = [(n, kw) for n, kw in usable if n in ("fused", "foreach")]
        if device == "cuda" and len(variants) < 2:
            raise SystemExit(f"FAILED: {family} fused and foreach are both needed on CUDA: {missing}")
        names = [n for n, _ in variants]
        print(f"{family}: torch {', '.join(names)}")
        rows = []
        for total in parse_counts(args.params):
            for tensors in parse_counts(args.tensors):
                for step in (s for s in BENCH_STEPS if s[2] is cls):
                    ms, nbytes = bench_size(lib, device, variants, total, tensors, step,
                                            args.rounds)
                    cells = [f"{ms[n]:.4f}" for n in ["ours"] + names]
                    cells += [f"{nbytes / (ms[n] / 1e3) / 1e9:.0f}" for n in ["ours"] + names]
                    cells += [f"{ms[n] / ms['ours']:.2f}x" for n in names]
                    rows.append(f"| {human(total)} | {tensors} | {step[0]} | " + " | ".join(cells)
                                + " |")
                    print(rows[-1])
        header = (["params", "tensors", "step"] + [f"{n} ms" for n in ["ours"] + names]
                  + [f"{n} GB/s" for n in ["ours"] + names] + [f"{n} / ours" for n in names])
        md += ("\n| " + " | ".join(header) + " |\n|" + "---:|" * 2 + "---|"
               + "---:|" * (len(header) - 3) + "\n" + "\n".join(rows) + "\n")
    write(args.markdown, md)
    return 0


def write(path, text):
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    parity = sub.add_parser("parity")
    parity.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parity.add_argument("--steps", type=int, default=60)
    parity.add_argument("--require-fused", action="store_true")
    bench = sub.add_parser("bench")
    bench.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bench.add_argument("--params", default="1M,10M,100M")
    bench.add_argument("--tensors", default="4,1000")
    bench.add_argument("--rounds", type=int, default=15)
    for p in (parity, bench):
        p.add_argument("--lib", help="libOptim.Native.so (default: $OPTIM_NATIVE_LIBRARY, or "
                       "artifacts/native/lib/)")
        p.add_argument("--markdown", help="write a Markdown summary here")
    args = parser.parse_args()
    try:
        lib = optim_abi.Library(args.lib)
    except optim_abi.OptimError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    return run_parity(args, lib) if args.command == "parity" else run_bench(args, lib)


if __name__ == "__main__":
    sys.exit(main())
