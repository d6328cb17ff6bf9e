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
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
            info["cpu"] = f"{names[0]} x{len(names)}" if names else platform.processor()
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_kb(key: str, path: str = "/proc/self/status") -> int:
    with open(path) as f:
        for line in f:
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


def policy_group(G, T, d, V, dtype, device, seed=0, temperature=1.0, positive_fraction=0.5, zipf=1.1, n_cand=24):
    """A group whose tokens are sampled from the policy; returns (H, W, Y, mask, positive, logits).

    Each state is ``sum_r a_r W[t_r] + noise`` over ``n_cand`` candidate tokens ``t_r`` drawn from a
    Zipf law over a random permutation of the vocabulary (a shared "topic"), with ``a_1 ~ U(12, 22)``,
    ``a_2 = a_1 - Exp(mean 2)`` and then ``a_{r+1} = a_r - Exp(mean 0.7)``: most tokens are
    near-deterministic, some are forks between a few candidates, a long tail of candidates holds
    a few % of the mass, and 0-10% sits in a flat tail over the whole vocabulary.
    Response lengths vary (the last responses are shorter); logits are float32 (``logits`` output).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    W = torch.randn(V, d, generator=gen) / math.sqrt(d)
    perm = torch.randperm(V, generator=gen)
    zipf_p = torch.arange(1, V + 1, dtype=torch.float64).pow(-zipf)
    n = G * T
    cand = perm[torch.multinomial(zipf_p / zipf_p.sum(), n * n_cand, replacement=True, generator=gen)].view(n, n_cand)
    gaps = torch.empty(n, n_cand - 1).exponential_(1 / 0.7, generator=gen)
    gaps[:, 0] = torch.empty(n).exponential_(1 / 2.0, generator=gen)
    a1 = 12 + 10 * torch.rand(n, 1, generator=gen)
    coef = torch.cat([a1, a1 - gaps.cumsum(1)], 1).clamp(min=0)
    H = torch.einsum("nr,nrd->nd", coef, W[cand]) + 0.5 * torch.randn(n, d, generator=gen) / math.sqrt(d)
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
