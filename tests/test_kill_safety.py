"""Kill safety: `python -m analysis run` killed with SIGKILL at seeded random moments, at least 20 times.

After every kill the previous pack of the period is in place with the same bytes (it is never missing, not even
for an instant: the new pack and the previous one trade places atomically), no kernel of the killed run lives on,
and nothing half-written is visible. After the next complete run no staging folder, old pack or lock file is
left, and two runs of one period at once give one clear lock error and one good pack.

Cost: a real monthly run on 3 000 demo leads takes 20-40 s, so most kills use a kit root whose section notebooks
are stubs (the real executive brief, rendering, e-mail, manifest and publication: the run's own machinery, about
a third of a real run's tail) and some kill real runs during their first seconds. Kills are aimed at every phase:
start-up, kernels, notebooks, and the render / e-mail / manifest / publish tail (triggered once the staging folder
holds the rendered pack).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from analysis import pack
from analysis.config import DEFINITIONS_FILE, NOTEBOOKS_DIR, load_definitions
from analysis.demo import generate_demo_data
from analysis.ingest import ingest
from analysis.pack import BRIEF, CADENCES

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
PERIOD = "2026-10"
SEED = 20260909
REAL_KILLS = 3  # real runs, killed during their first seconds (start-up, lock, kernels, first notebooks)
STUB_KILLS = 13  # stub runs, killed anywhere before their tail
TAIL_KILLS = 4  # stub runs killed once the staging folder holds board_pack.html (e-mail, manifest, publication)
MIN_KILLS = 20


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _stub_kit(root: Path) -> Path:
    """A kit root (FUNNEL_KIT_ROOT) whose section notebooks only write empty metrics; the brief is the real one."""
    (root / "notebooks").mkdir(parents=True)
    shutil.copytree(ROOT / "config", root / "config")
    params = nbformat.read(NOTEBOOKS_DIR / f"{BRIEF}.ipynb", as_version=4).cells[1]
    assert "parameters" in params.metadata.get("tags", [])
    for name in CADENCES["monthly"]:
        if name == BRIEF:
            shutil.copy(NOTEBOOKS_DIR / f"{name}.ipynb", root / "notebooks" / f"{name}.ipynb")
            continue
        nb = nbformat.v4.new_notebook()
        nb.metadata = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4).metadata
        nb.cells = [
            nbformat.v4.new_markdown_cell(f"# Stub {name}"),
            params,
            nbformat.v4.new_code_cell("from analysis.metrics import empty, write_section_metrics\n"
                                      f"write_section_metrics(empty(), out_dir, 'stub_{name}');"),
        ]
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    raw, processed = root / "raw", root / "processed"
    generate_demo_data(raw, n_leads=3000)
    ingest(raw, ROOT / "config" / "mappings" / "canonical.yml", processed, load_definitions())
    return {"root": root, "raw": raw, "processed": processed, "reports": root / "reports",
            "stub": _stub_kit(root / "stubkit")}


def _command(world) -> list[str]:
    return [sys.executable, "-m", "analysis", "run", "--cadence", "monthly", "--period", PERIOD,
            "--data", str(world["processed"]), "--out", str(world["reports"] / PERIOD),
            "--actions", str(world["raw"] / "actions"), "--definitions", str(DEFINITIONS_FILE)]


def _start(world, stub: bool) -> subprocess.Popen:
    env = dict(os.environ)
    if stub:
        env["FUNNEL_KIT_ROOT"] = str(world["stub"])
    return subprocess.Popen(_command(world), cwd=world["root"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _kernels_of(pid: int) -> list[int]:
    """Kernel processes started for `pid` (jupyter_client passes the parent's pid as JPY_PARENT_PID)."""
    mark = f"JPY_PARENT_PID={pid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _phase(staging: Path, started: float) -> str:
    """Where the run is: its staging folder (not a killed run's leftover) tells."""
    try:
        ours = staging.stat().st_ctime >= started - 1
    except FileNotFoundError:
        ours = False
    if not ours:
        manifest = staging.parent / PERIOD / "manifest.json"
        published = manifest.exists() and manifest.stat().st_ctime >= started - 1
        return "after publication" if published else "start-up"
    if (staging / "board_pack.html").exists():
        return "render/e-mail/manifest/publish"
    if (staging / "metrics.parquet").exists():
        return "brief"
    return "notebooks"


def _kill(proc: subprocess.Popen, world, whole_group: bool, started: float) -> tuple[bool, str]:
    """SIGKILL the run (its process, like the OOM killer, or its whole process group); (killed, phase)."""
    phase = _phase(world["reports"] / f".{PERIOD}.partial", started)
    if proc.poll() is not None:
        return False, "finished"
    kernels = _kernels_of(proc.pid)
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # Its kernels notice that their parent is gone and end by themselves (they must not run on, writing).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{k}").exists() and _alive(k) for k in kernels):
        time.sleep(0.2)
    survivors = [k for k in kernels if _alive(k)]
    for k in survivors:
        os.kill(k, signal.SIGKILL)
    assert not survivors, f"kernels {survivors} of the killed run {proc.pid} outlived it"
    return proc.returncode == -signal.SIGKILL, phase


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _intact(world, previous: dict[str, str]) -> None:
    final = world["reports"] / PERIOD
    assert final.is_dir(), "the previous pack is gone"
    assert _tree(final) == previous, "the previous pack changed"
    html = (final / "board_pack.html").read_text(encoding="utf-8")
    assert html.rstrip().endswith("</html>")
    json.loads((final / "manifest.json").read_text(encoding="utf-8"))


def _run_to_end(world, stub: bool) -> float:
    t0 = time.monotonic()
    proc = _start(world, stub)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    return time.monotonic() - t0


def test_sigkill_at_random_moments_never_damages_the_previous_pack(world):
    rng = random.Random(SEED)
    reports = world["reports"]
    t_stub = _run_to_end(world, stub=True)
    previous = _tree(reports / PERIOD)
    assert {"board_pack.html", "board_pack.eml", "manifest.json", "metrics.parquet"} <= set(previous)

    log: list[tuple[str, float, str, bool]] = []
    plan = ([("real", rng.uniform(0.5, 12.0)) for _ in range(REAL_KILLS)]
            + [("stub", rng.uniform(0.2, t_stub * 0.6)) for _ in range(STUB_KILLS)]
            + [("tail", rng.uniform(0.0, 0.3)) for _ in range(TAIL_KILLS)])
    rng.shuffle(plan)
    extra = 0
    while plan:
        kind, delay = plan.pop()
        started = time.time()
        proc = _start(world, stub=kind != "real")
        if kind == "tail":  # wait for the rendered pack in the staging folder, then a little more
            staged = reports / f".{PERIOD}.partial" / "board_pack.html"
            deadline = time.monotonic() + 300
            while not staged.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(delay)
        killed, phase = _kill(proc, world, whole_group=rng.random() < 0.5, started=started)
        log.append((kind, round(delay, 2), phase, killed))
        _intact(world, previous)  # same bytes, right after the kill, before any other run
        if not killed:  # the run finished first: a complete, identical pack (the run is deterministic)
            extra += 1
            if extra <= 5:
                plan.append((kind, rng.uniform(0.2, t_stub * 0.5)))
    kills = [entry for entry in log if entry[3]]
    phases = {p for _, _, p, k in kills}
    print(f"\n{len(kills)} kills survived ({len(log) - len(kills)} runs finished first); kills by phase: "
          + ", ".join(f"{p}: {sum(1 for e in kills if e[2] == p)}" for p in sorted(phases)))
    assert len(kills) >= MIN_KILLS, log
    assert {"start-up", "notebooks", "render/e-mail/manifest/publish"} <= phases, log
    assert sum(1 for e in kills if e[2] == "render/e-mail/manifest/publish") >= 3, log


def test_after_the_kills_the_next_run_succeeds_alone_and_leaves_nothing_behind(world):
    """A real run, with a second run of the same period started while it holds the lock: the second fails at
    once with a one-line lock error; the first completes; no staging folder, old pack or lock file remains."""
    reports = world["reports"]
    if not (reports / PERIOD).exists():  # run alone (-k): a previous pack and a stale staging folder to clear
        _run_to_end(world, stub=True)
    (reports / f".{PERIOD}.partial" / "notebooks").mkdir(parents=True, exist_ok=True)  # a killed run's leftovers
    (reports / f".{PERIOD}.partial" / "notebooks" / "03_funnel_conversion.ipynb").write_text("{half")
    first = _start(world, stub=False)
    lock = reports / f".{PERIOD}.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and f"pid {first.pid}" not in (lock.read_text() if lock.exists() else ""):
        assert first.poll() is None, first.stderr.read().decode()
        time.sleep(0.05)
    second = _start(world, stub=False)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and f"another run of {PERIOD} is in progress (pid {first.pid}" in lines[0], lines
    assert "rule lock" in lines[0]
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err.decode()
    assert sorted(p.name for p in reports.iterdir()) == [PERIOD], "staging, old pack or lock file left behind"
    final = reports / PERIOD
    names = set(_tree(final))
    assert {"board_pack.html", "board_pack.eml", "manifest.json", "metrics.parquet"} <= names
    assert {f"notebooks/{n}.ipynb" for n in CADENCES["monthly"]} <= names
    html = (final / "board_pack.html").read_text(encoding="utf-8")
    assert "Stub " not in html and "What moved" in html and html.rstrip().endswith("</html>")
    manifest = json.loads((final / "manifest.json").read_text(encoding="utf-8"))
    for rel, digest in manifest["outputs"].items():  # the manifest describes exactly what is there
        if rel != "manifest.json":
            assert hashlib.sha256((final / rel).read_bytes()).hexdigest() == digest.removeprefix("sha256:"), rel


def test_publication_never_leaves_the_period_without_a_complete_pack(tmp_path, monkeypatch):
    """Every file-system step of publishing, observed: the period's folder always holds the previous or the new
    complete pack (a kill between two renames must not leave it empty until the next run recovers it)."""
    final, staging = tmp_path / PERIOD, tmp_path / f".{PERIOD}.partial"
    for folder, text in ((final, "previous"), (staging, "new")):
        (folder / "notebooks").mkdir(parents=True)
        (folder / "board_pack.html").write_text(text)
        (folder / "notebooks" / "x.ipynb").write_text(text)
    seen: list[str] = []

    def look(step: str) -> None:
        pack_file = final / "board_pack.html"
        text = pack_file.read_text() if pack_file.exists() else "MISSING"
        notebook = final / "notebooks" / "x.ipynb"
        seen.append(f"{step}: {text}/{notebook.read_text() if notebook.exists() else 'MISSING'}")

    def observed(fn, step):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            look(step)
            return out
        return wrapper

    monkeypatch.setattr(Path, "rename", observed(Path.rename, "rename"))
    monkeypatch.setattr(shutil, "rmtree", observed(shutil.rmtree, "rmtree"))
    if hasattr(pack, "_exchange"):
        monkeypatch.setattr(pack, "_exchange", observed(pack._exchange, "exchange"))
    pack._publish(staging, final)
    assert seen and all(s.endswith(("previous/previous", "new/new")) for s in seen), seen
    assert (final / "board_pack.html").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == [PERIOD]
