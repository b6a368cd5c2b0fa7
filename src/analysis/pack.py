"""Run a cadence: execute its notebooks with papermill, assemble metrics, render and publish the pack.

The sequence: resolve period -> execute section notebooks (two kernels in parallel) -> one FDR family over
every test in the pack -> execute the executive brief on the assembled metrics -> normalise the executed
notebooks -> render one HTML file -> manifest -> move into place. Everything is written into a hidden sibling
folder and swapped in only when complete, under a lock, so a failed or killed run never leaves a half-written
pack or damages the previous one.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import html
import json
import os
import queue
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd

from analysis import __version__
from analysis.config import DEFINITIONS_FILE, NOTEBOOKS_DIR, PROJ_ROOT, REPORTS_DIR, load_definitions
from analysis.context import snapshot_of
from analysis.errors import RunError
from analysis.manifest import git_commit, outputs_of, package_set_hash, sha256_file, write_json
from analysis.metrics import read_metrics, write_metrics
from analysis.periods import Period, as_of_for, last_complete_period, parse_period
from analysis.render import RenderedSection, render_page, render_section
from analysis.stats import bh_qvalues

BRIEF = "01_executive_brief"

# Notebooks per cadence, in the pack's reading order (the brief always first, executed last).
CADENCES: dict[str, tuple[str, ...]] = {
    "monthly": (
        BRIEF,
        "02_data_quality",
        "03_funnel_conversion",
        "04_velocity",
        "05_handoff_sla",
        "06_closed_lost",
        "07_attribution",
        "08_pipeline_plan",
    ),
    "weekly": (BRIEF, "05_handoff_sla", "09_pipeline_operations", "02_data_quality"),
    "quarterly": (
        BRIEF,
        "08_pipeline_plan",
        "06_closed_lost",
        "03_funnel_conversion",
        "04_velocity",
        "02_data_quality",
    ),
}

CADENCE_TITLES = {"monthly": "Monthly trend review", "weekly": "Weekly operating review", "quarterly": "Quarterly plan"}
PARALLEL_KERNELS = 2


@dataclass(frozen=True)
class RunSpec:
    """Everything a run depends on (recorded in the manifest)."""

    cadence: str
    period: Period
    as_of: pd.Timestamp
    data_dir: Path
    out_dir: Path
    definitions_path: Path
    notebooks_dir: Path
    actions_path: Path
    engine: str


def resolve_period(cadence: str, period: str | None, data_dir: Path) -> Period:
    """The requested period, or the last complete one in the data; checked against the cadence."""
    if cadence not in CADENCES:
        raise RunError(f"unknown cadence '{cadence}' (one of {', '.join(CADENCES)})", rule="cadence")
    if period is None:
        return last_complete_period(cadence, snapshot_of(data_dir))
    try:
        p = parse_period(period)
    except ValueError as exc:
        raise RunError(str(exc), rule="period") from exc
    if p.cadence != cadence:
        raise RunError(f"period '{period}' is {p.cadence}, not {cadence}", rule="period")
    return p


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _parameters(spec: RunSpec, workdir: Path) -> dict[str, str]:
    # Paths relative to the kernel's working folder (the report folder), so executed notebooks do not depend
    # on where the repository lives or on the temporary folder's name.
    return {
        "period": spec.period.label,
        "cadence": spec.cadence,
        "as_of": spec.as_of.isoformat(),
        "data_dir": _rel(spec.data_dir, workdir),
        "out_dir": ".",
        "definitions_path": _rel(spec.definitions_path, workdir),
        "actions_path": _rel(spec.actions_path, workdir),
        "engine": spec.engine,
    }


@contextmanager
def _kernel_log(path: Path) -> Iterator[None]:
    """Send this process's (and its kernels') stderr to a log file: kernel start-up chatter stays off the console."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


# Run before every notebook but the first on a kernel: what a fresh kernel would give, without paying for a new
# process and the imports again (kernel start-up and `import analysis.*` were about 4-6 s of each notebook's
# 7-14 s). The user namespace and the execution counter are reset (so the executed notebooks are byte-identical to
# fresh-kernel runs), figures closed, and "shown once" warning registries invalidated; imported modules stay.
_FRESH_NAMESPACE = """
def _kit_fresh():
    import gc, sys, warnings
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
    getattr(warnings, "_filters_mutated", lambda: None)()
    get_ipython().reset(new_session=True)
    gc.collect()
_kit_fresh()
"""


class _Kernel:
    """One long-lived python3 kernel that executes notebooks one after another, each in a fresh namespace."""

    def __init__(self, cwd: str) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=cwd)
        self.used = False

    def fresh(self) -> None:
        if not self.used:
            self.used = True
            return
        kc = self.km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            reply = kc.execute_interactive(_FRESH_NAMESPACE, silent=True, store_history=False, timeout=60)
            if reply["content"]["status"] != "ok":
                raise RunError(f"kernel reset failed: {reply['content'].get('evalue', '')}", rule="kernel")
        finally:
            kc.stop_channels()

    def shutdown(self) -> None:
        self.km.shutdown_kernel(now=True)


class _KernelPool:
    """Up to `size` long-lived kernels, started on first use and shut down on exit."""

    def __init__(self, size: int, cwd: str) -> None:
        self.size, self.cwd = size, cwd
        self.kernels: list[_Kernel | None] = [None] * size

    def kernel(self, slot: int) -> _Kernel:
        if self.kernels[slot] is None:
            self.kernels[slot] = _Kernel(self.cwd)
        return self.kernels[slot]

    def run(self, jobs: list[tuple[str, str, dict[str, str], str]]) -> None:
        """Execute notebooks on the pool's kernels in parallel (threads drive them; the work is in the kernels).
        The first failure is raised once the running notebooks finish; the remaining ones are not started."""
        todo: queue.Queue = queue.Queue()
        for job in jobs:
            todo.put(job)
        errors: list[BaseException] = []

        def worker(slot: int) -> None:
            try:
                while not errors:
                    try:
                        job = todo.get_nowait()
                    except queue.Empty:
                        return
                    kernel = self.kernel(slot)
                    kernel.fresh()
                    _execute_quietly(*job, km=kernel.km)
            except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
                errors.append(exc)

        try:
            os.getcwd()
        except FileNotFoundError:  # this process's working folder was deleted: kernel start-up needs one
            os.chdir(self.cwd)
        with _kernel_log(Path(self.cwd) / ".kernels.log"):
            n = min(self.size, len(jobs))
            threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]

    def __enter__(self) -> _KernelPool:
        return self

    def __exit__(self, *exc) -> None:
        with _kernel_log(Path(self.cwd) / ".kernels.log"):
            for k in self.kernels:
                if k is not None:
                    k.shutdown()


def _execute_quietly(source: str, target: str, parameters: dict[str, str], cwd: str, km=None) -> str:
    import papermill  # imported on first use: keeps `import analysis.pack` light

    nb = nbformat.read(source, as_version=4)
    declared = _declared_parameters(nb)
    params = {k: v for k, v in parameters.items() if k in declared}
    # With a running kernel (started in `cwd`) papermill must not chdir: the process's working folder is shared by
    # the threads that drive the kernels.
    extra = {"km": km} if km is not None else {}
    try:
        papermill.execute_notebook(
            source,
            target,
            parameters=params,
            kernel_name="python3",
            cwd=None if km is not None else cwd,
            progress_bar=False,
            log_output=False,
            **extra,
        )
    except papermill.PapermillExecutionError as exc:
        raise RunError(
            f"notebook failed: {exc.ename}: {exc.evalue}", file=Path(source).name, rule="notebook_execution"
        ) from None
    return target


def _declared_parameters(nb: nbformat.NotebookNode) -> set[str]:
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            names = set()
            for line in cell.source.splitlines():
                name, sep, _ = line.partition("=")
                if sep and name.strip().isidentifier():
                    names.add(name.strip())
            return names
    return set()


def normalise_notebook(path: Path) -> None:
    """Strip run-to-run noise (timestamps, durations, paths) from an executed notebook, in place."""
    nb = nbformat.read(path, as_version=4)
    pm = nb.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration", "input_path", "output_path", "environment_variables"):
        pm.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill gives the injected cell a random id on every run
        cpm = cell.metadata.get("papermill")
        if cpm is not None:
            for key in ("start_time", "end_time", "duration"):
                cpm.pop(key, None)
    nbformat.write(nb, path)


def assemble_metrics(report_dir: Path) -> pd.DataFrame:
    """Every section's metrics in one table with Benjamini-Hochberg q-values over the pack's single family."""
    metrics = read_metrics(report_dir / "metrics")
    metrics["q_value"] = bh_qvalues(metrics["p_value"].to_numpy())
    return metrics


def _provenance(spec: RunSpec, ingest: dict, definitions_sha: str) -> list[tuple[str, str]]:
    rows = [
        ("Period", f"{spec.period.label} ({spec.cadence})"),
        ("As of", spec.as_of.strftime("%Y-%m-%d %H:%M UTC")),
        ("Definitions sha256", definitions_sha),
        ("Kit version", __version__),
        (
            "Import mapping",
            f"{ingest.get('mapping', {}).get('name', '')} {ingest.get('mapping', {}).get('sha256', '')}",
        ),
    ]
    for path, f in sorted(ingest.get("inputs", {}).items()):
        rows.append((f"Input {path}", f"sha256 {f['sha256']} · {f.get('rows', '')} rows"))
    if spec.actions_path.exists():
        rows.append((f"Input {spec.actions_path.name}", f"sha256 {sha256_file(spec.actions_path)}"))
    return rows


def _definitions_appendix(text: str, sha: str) -> RenderedSection:
    body = (
        '<div class="kit-definitions"><h1>Appendix: governed definitions</h1>'
        f"<p>config/definitions.yml, sha256 <code>{sha}</code>. Every number in this pack uses these rules.</p>"
        f"<pre>{html.escape(text)}</pre></div>"
    )
    return RenderedSection(anchor="appendix-definitions", title="Appendix: governed definitions", body=body)


@contextmanager
def _lock(reports_root: Path, label: str) -> Iterator[None]:
    """Hold `.<label>.lock` (an flock) for the whole run: a second run of the period fails at once, naming the
    holder. The file is removed when the run ends, while still locked; a killed run's lock dies with its process
    and its file is taken over (and removed) by the next run."""
    reports_root.mkdir(parents=True, exist_ok=True)
    path = reports_root / f".{label}.lock"
    while True:
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the whole run)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = " ".join(fh.read().split())
            fh.close()
            raise RunError(
                f"another run of {label} is in progress ({holder or 'no pid'}, lock {path.name}); "
                "try again when it finishes",
                file=str(path),
                rule="lock",
            ) from None
        try:  # the run that held it may have removed the file between our open and our lock: lock the new one
            current = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        fh.close()
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        fh.close()


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):  # kernel or file system cannot
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under root to disk: a crash just after the swap must not leave empty files."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(fd)


def _publish(staging: Path, final: Path) -> None:
    """Swap a complete staging folder into place.

    Where the system can (Linux), the new pack and the previous one trade places in one atomic step: the period's
    folder holds a complete pack at every instant, whenever the run is killed. Elsewhere the previous pack is moved
    aside first and `recover` puts it back if the run dies between the two renames."""
    _fsync_tree(staging)
    if final.exists() and _exchange(staging, final):
        _fsync_dir(final.parent)
        shutil.rmtree(staging)  # the previous pack, now at the staging path (left to `recover` if killed here)
        return
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def recover(reports_root: Path, label: str) -> None:
    """Restore the previous pack if a run was killed between the two renames; drop stale staging folders."""
    final = reports_root / label
    old = reports_root / f".{label}.old"
    if old.exists() and not final.exists():
        old.rename(final)
    elif old.exists():
        shutil.rmtree(old)
    staging = reports_root / f".{label}.partial"
    if staging.exists():
        shutil.rmtree(staging)


def run_cadence(
    cadence: str,
    period: str | None = None,
    *,
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    definitions_path: str | Path | None = None,
    notebooks_dir: str | Path | None = None,
    actions_dir: str | Path | None = None,
    engine: str = "duckdb",
) -> Path:
    """Execute, assemble, render and publish one cadence's pack; return the report folder."""
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "ingest_manifest.json").exists():
        raise RunError("no ingested data (run `python -m analysis ingest` first)", file=str(data_dir), rule="input")
    p = resolve_period(cadence, period, data_dir)
    final = Path(out_dir).resolve() if out_dir else (REPORTS_DIR / p.label).resolve()
    reports_root = final.parent
    definitions_path = Path(definitions_path or DEFINITIONS_FILE).resolve()
    definitions = load_definitions(definitions_path)
    actions_root = Path(actions_dir) if actions_dir else PROJ_ROOT / "data" / "raw" / "actions"
    spec = RunSpec(
        cadence=cadence,
        period=p,
        as_of=as_of_for(p, snapshot_of(data_dir)),
        data_dir=data_dir,
        out_dir=final,
        definitions_path=definitions_path,
        notebooks_dir=Path(notebooks_dir or NOTEBOOKS_DIR).resolve(),
        actions_path=(actions_root / f"{p.label}.md").resolve(),
        engine=engine,
    )
    names = CADENCES[cadence]
    for name in names:
        if not (spec.notebooks_dir / f"{name}.ipynb").exists():
            raise RunError("notebook missing", file=str(spec.notebooks_dir / f"{name}.ipynb"), rule="cadence")

    with _lock(reports_root, final.name):
        recover(reports_root, final.name)
        staging = reports_root / f".{final.name}.partial"
        (staging / "notebooks").mkdir(parents=True)
        params = _parameters(spec, staging)
        jobs = [
            (str(spec.notebooks_dir / f"{n}.ipynb"), str(staging / "notebooks" / f"{n}.ipynb"), params, str(staging))
            for n in names
            if n != BRIEF
        ]
        try:
            brief_job = (
                str(spec.notebooks_dir / f"{BRIEF}.ipynb"),
                str(staging / "notebooks" / f"{BRIEF}.ipynb"),
                params,
                str(staging),
            )
            with _KernelPool(PARALLEL_KERNELS, str(staging)) as kernels:
                kernels.run(jobs)
                write_metrics(assemble_metrics(staging), staging / "metrics.parquet")
                kernels.run([brief_job])  # on a warm kernel: it reads the assembled metrics
            shutil.rmtree(staging / "metrics")  # assembled into metrics.parquet
            (staging / ".kernels.log").unlink(missing_ok=True)
            for n in names:
                normalise_notebook(staging / "notebooks" / f"{n}.ipynb")

            ingest = json.loads((data_dir / "ingest_manifest.json").read_text(encoding="utf-8"))
            sections = [render_section(staging / "notebooks" / f"{n}.ipynb") for n in names]
            sections.append(_definitions_appendix(definitions.text, definitions.sha256))
            page = render_page(
                sections,
                title=f"{CADENCE_TITLES[cadence]} · {p.label}",
                subtitle=f"Revenue funnel board pack · data as of {spec.as_of:%Y-%m-%d %H:%M} UTC",
                provenance=_provenance(spec, ingest, definitions.sha256),
            )
            (staging / "board_pack.html").write_text(page, encoding="utf-8")
            from analysis.mailer import write_eml  # local: the mailer reads pack's cadence titles

            write_eml(staging, cadence=cadence, period=p.label)  # board_pack.eml (the e-mail, dry run)
            write_json(staging / "manifest.json", build_manifest(spec, staging, ingest, definitions.sha256))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _publish(staging, final)
    return final


def build_manifest(spec: RunSpec, report_dir: Path, ingest: dict, definitions_sha: str) -> dict:
    """The run manifest: code, environment, parameters, definitions, inputs and outputs, each with its hash.

    Paths are relative to the report folder (as the notebooks received them), so `analysis.audit` can rebuild
    the same layout elsewhere; `inputs` is described in `analysis.audit.recorded_inputs`.
    """
    from analysis.audit import recorded_inputs  # local: the audit module imports this one

    lock_hash, _ = package_set_hash()
    return {
        "kit": {"version": __version__, "commit": git_commit(PROJ_ROOT), "package_set_sha256": lock_hash},
        "parameters": {
            "cadence": spec.cadence,
            "period": spec.period.label,
            "as_of": spec.as_of.isoformat(),
            "engine": spec.engine,
            "notebooks": list(CADENCES[spec.cadence]),
            "paths": {
                "data_dir": _rel(spec.data_dir, report_dir),
                "definitions": _rel(spec.definitions_path, report_dir),
                "actions": _rel(spec.actions_path, report_dir),
            },
        },
        "definitions": {"path": _rel(spec.definitions_path, report_dir), "sha256": definitions_sha},
        "inputs": recorded_inputs(spec, report_dir, ingest),
        "outputs": outputs_of(report_dir),
    }
