"""``thr report`` on a real (tiny) training run: the page is self-contained, its numbers are the run's,
and headless Chromium renders every chart without a console message (skipped without Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import tiny_embedded_config

from thr.analysis.report import build_report, cli_main, load_run
from thr.config import load_config
from thr.rl.trainer import Trainer
from thr.rl.config import TrainConfig

torch.set_num_threads(1)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def run_dir(tiny_policy_dir, tmp_path_factory):
    """A real 2-step ``thr train`` run of the tiny policy with evaluation and logged groups."""
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(TrainConfig, [
        f"output_dir={out}", f"model.name_or_path={tiny_policy_dir}", "steps=2", "seed=3",
        "rollout.prompts_per_step=4", "rollout.group_size=6", "rollout.max_new_tokens=24", "optim.lr=1e-3",
        "data.prompt_template=plain", "data.train=arith", "data.eval=arith", "eval.limit=6", "eval.n=2", "log.progress=false", "log.groups_every=1",
        "log.groups_per_log=2", "save_every=0",
    ])
    cfg.embedded = tiny_embedded_config()
    Trainer(cfg).train()
    return out


@pytest.fixture(scope="module")
def report(run_dir):
    assert cli_main([str(run_dir), "--groups", "3"]) == 0
    path = run_dir / "report" / "report.html"
    _html, charts, _ = build_report(load_run(run_dir), 3)
    return path, charts


def test_report_is_self_contained_and_holds_the_run_numbers(run_dir, report):
    path, charts = report
    html = path.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", html) and "<link" not in html and "@import" not in html
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}  # a namespace, never fetched
    ids = [c["id"] for c in charts]
    assert len(ids) == len(set(ids))
    for cid in ("c-reward", "c-eval", "c-passk", "c-entropy", "c-length", "c-kl", "c-thrfrac", "c-thrmag", "c-time"):
        assert cid in ids and f'id="{cid}"' in html
    data = json.loads(re.search(r'<script type="application/json" id="thr-data">(.*?)</script>', html, re.DOTALL).group(1))
    assert [c["id"] for c in data["charts"]] == ids
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step" in r]
    time_chart = next(c for c in charts if c["id"] == "c-time")
    assert time_chart["categories"] == [str(r["step"]) for r in steps]
    assert time_chart["series"][2]["values"] == [r["time/thr"] for r in steps]  # the THR bar is the run's time/thr
    entropy = next(c for c in charts if c["id"] == "c-entropy")["series"][0]
    assert entropy["y"] == [r["policy/entropy"] for r in steps]
    groups = [json.loads(line) for line in (run_dir / "groups.jsonl").read_text().splitlines()]
    assert 1 <= html.count('class="group"') <= 3 and html.count('<span class="tok') > 10
    assert len(groups) == 4 and "config.yaml" in html
    assert (path.parent / "training.png").stat().st_size > 5000


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium); the page was not rendered")
    path, charts = report
    url = path.resolve().as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, *profile, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, f"the page logged to the console: {console}"
    html = dom.stdout
    assert f'data-rendered="{len(charts)}"' in html, "the page did not finish drawing its charts"
    assert re.search(r"<html[^>]*>", html) and "data-errors" not in re.search(r"<html[^>]*>", html).group(0)
    assert html.count("<svg") == len(charts)
    assert html.count('class="series"') >= len(charts)  # every chart drew at least one line or bar
    assert html.count('id="tip"') == 1  # the token tooltip is in place
    shot = tmp_path / "report.png"
    res = subprocess.run([browser, *CHROMIUM_FLAGS, *profile, f"--screenshot={shot}", "--window-size=1360,2400", url],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
