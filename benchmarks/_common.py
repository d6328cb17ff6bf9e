"""Shared pieces of the THR cost benchmarks: synthetic groups, timing, peak memory, machine info.

Everything is built locally from random numbers (no downloads). Two generators:

- :func:`random_group`: i.i.d. states and uniformly random token ids (timing only: the cost of the
  exact algorithms does not depend on the values);
- :func:`policy_group`: states that put most probability on a few Zipf-distributed candidate
  tokens, and response tokens *sampled from the policy itself* (``softmax(W h / tau)``), so the
  tokens present in a group, the top-k sets and the probability tail behave like a language
  model's (used for the approximation's error).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def machine_info(device: str) -> dict:
    info = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_1m": round(os.getloadavg()[0], 2), "python": platform.python_version()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    else:
        with contextlib.suppress(OSError):
            names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
            info["cpu"] = f"{names[0]} x{len(names)}" if names else platform.processor()
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
    raise KeyError(key)


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak, or on CPU the peak RSS growth
    (``/proc/self/clear_refs`` resets the high-water mark). ``self.mb`` after the block."""

    def __init__(self, device: str):
        self.device, self.mb = device, float("nan")

    def __enter__(self):
        sync(self.device)
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _rss_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        sync(self.device)
        if self.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _rss_kb("VmHWM") * 1024
        self.mb = (peak - self.base) / 2**20
        return False


def timed(fn, device: str, repeats: int, warmup: int = 0) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` runs (after ``warmup``); returns (seconds, last result)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def random_group(G, T, d, V, dtype, device, seed=0, positive_fraction=0.5):
    """I.i.d. states (``|h| ~ 4``), a ``W`` with unit-norm-ish rows, uniform ids, all tokens valid.

    Drawn on ``device`` (a CUDA generator there), in float32, then cast to ``dtype``.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    W = (torch.randn(V, d, generator=gen, device=device) / math.sqrt(d)).to(dtype)
    H = (torch.randn(G, T, d, generator=gen, device=device) * (4.0 / math.sqrt(d))).to(dtype)
    Y = torch.randint(0, V, (G, T), generator=gen, device=device)
    mask = torch.ones(G, T, dtype=torch.bool, device=device)
    positive = (torch.arange(G) < max(1, round(G * positive_fraction))).to(device)
    return H, W, Y, mask, positive


def head_logits(H, W, chunk=4096, out_dtype=None):
    """``[G, T, V]`` logits computed in float32 (float64 for float64 inputs), stored in ``out_dtype``
    (default: that compute dtype), built chunk by chunk."""
    G, T, d = H.shape
    dt = torch.float64 if W.dtype == torch.float64 else torch.float32
    Wc = W.to(dt)
    flat = H.reshape(-1, d)
    out = torch.empty(G * T, W.shape[0], dtype=out_dtype or dt, device=H.device)
    for a in range(0, flat.shape[0], chunk):
        out[a : a + chunk] = torch.mm(flat[a : a + chunk].to(dt), Wc.T)
    return out.view(G, T, -1)


def policy_group(G, T, d, V, dtype, device, seed=0, temperature=1.0, positive_fraction=0.5, zipf=1.1):
    """A group whose tokens are sampled from the policy; returns (H, W, Y, mask, positive, logits).

    Each state is ``a1 W[t1] + a2 W[t2] + a3 W[t3] + noise`` with ``t`` drawn from a Zipf law over a
    random permutation of the vocabulary (a shared "topic"), ``a1 ~ U(14, 24)`` and the runner-ups
    ``a2 = a1 - Exp(3)``, ``a3 = a2 - Exp(3)``: most tokens are near-deterministic, some are forks,
    and 0-10% of the mass sits in the flat tail over the whole vocabulary (as with real LMs).
    Response lengths vary (the last responses are shorter); logits are float32 (``logits`` output).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    W = torch.randn(V, d, generator=gen) / math.sqrt(d)
    perm = torch.randperm(V, generator=gen)
    ranks = torch.arange(1, V + 1, dtype=torch.float64)
    zipf_p = ranks.pow(-zipf)
    cand = perm[torch.multinomial(zipf_p / zipf_p.sum(), G * T * 3, replacement=True, generator=gen)].view(G * T, 3)
    a1 = 14 + 10 * torch.rand(G * T, generator=gen)
    a2 = a1 - torch.empty(G * T).exponential_(1 / 3.0, generator=gen)
    a3 = a2 - torch.empty(G * T).exponential_(1 / 3.0, generator=gen)
    coef = torch.stack([a1, a2, a3], 1).clamp(min=0)
    H = (coef[..., None] * W[cand]).sum(1) + 0.5 * torch.randn(G * T, d, generator=gen) / math.sqrt(d)
    W, H = W.to(dtype), H.view(G, T, d).to(dtype)  # the policy is the (possibly rounded) model
    logits = head_logits(H, W)
    flat = logits.view(G * T, V)
    Y = torch.cat([torch.multinomial(torch.softmax(flat[a : a + 1024].double() / temperature, -1), 1, generator=gen)
                   for a in range(0, G * T, 1024)]).view(G, T)
    lengths = torch.tensor([T if j < G // 2 else T - T // 4 for j in range(G)])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    positive = torch.arange(G) < max(1, round(G * positive_fraction))
    to = dict(device=device)
    return H.to(**to), W.to(**to), Y.to(**to), mask.to(**to), positive.to(**to), logits.to(**to)


def emit(record: dict, out_file=None) -> None:
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    if out_file is not None:
        with open(out_file, "a") as f:
            f.write(line + "\n")
