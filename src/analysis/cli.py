"""`python -m analysis <command>`: gathers options and calls the public functions; nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from analysis import __version__
from analysis.config import DEFINITIONS_FILE, DEMO_SEED, MAPPINGS_DIR, PROCESSED_DATA_DIR, RAW_DATA_DIR, REPORTS_DIR
from analysis.errors import AnalysisError


def _demo_data(args: argparse.Namespace) -> int:
    from analysis.demo import generate_demo_data

    truth = generate_demo_data(
        Path(args.out), seed=args.seed, n_leads=args.leads, plant=not args.no_effects, fmt=args.format,
        touches_per_lead=args.touches_per_lead,
    )
    print(f"demo data written to {args.out} ({len(truth['effects'])} planted effects, seed {args.seed})")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from analysis.config import load_definitions
    from analysis.ingest import ingest

    result = ingest(Path(args.raw), Path(args.mapping), Path(args.out), load_definitions(args.definitions))
    for name, t in sorted(result.tables.items()):
        print(f"{name}: {t.rows_in} in = {t.rows_kept} kept + {t.rows_quarantined} quarantined")
    print(f"manifest: {result.manifest_path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from analysis.pack import run_cadence

    out = run_cadence(
        args.cadence,
        args.period,
        data_dir=args.data,
        out_dir=args.out,
        definitions_path=args.definitions,
        actions_dir=args.actions,
        engine=args.engine,
    )
    print(f"board pack: {out / 'board_pack.html'}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from analysis.audit import audit_report

    report = audit_report(Path(args.report_dir))
    print(report.text())
    return 0 if report.identical else 1


def _email(args: argparse.Namespace) -> int:
    from analysis.mailer import send_pack

    result = send_pack(Path(args.report_dir), to=args.to, dry_run=args.dry_run)
    print(result)
    return 0


def _definitions(args: argparse.Namespace) -> int:
    from analysis.config import load_definitions

    d = load_definitions(args.file)
    print(f"{d.path}: valid, sha256 {d.sha256}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per kit action."""
    parser = argparse.ArgumentParser(prog="python -m analysis", description="Revenue funnel review kit.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("demo-data", help="write the demo export with planted effects (truth.json)")
    p.add_argument("--out", default=str(RAW_DATA_DIR), help="folder to write into (default data/raw)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="random seed (same seed, same bytes)")
    p.add_argument("--leads", type=int, default=50_000, help="number of leads (default 50000)")
    p.add_argument("--no-effects", action="store_true", help="plant nothing: every process stable (null data)")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv", help="file format (default csv)")
    p.add_argument("--touches-per-lead", type=float, default=None,
                   help="mean journey length (default ~6.4 touchpoints per lead; 10.3 gives ~10)")
    p.set_defaults(func=_demo_data)

    p = sub.add_parser("ingest", help="map, validate and quarantine an export into canonical Parquet")
    p.add_argument("--raw", default=str(RAW_DATA_DIR), help="folder with the export (default data/raw)")
    p.add_argument("--mapping", default=str(MAPPINGS_DIR / "canonical.yml"), help="import mapping YAML")
    p.add_argument("--out", default=str(PROCESSED_DATA_DIR), help="output folder (default data/processed)")
    p.add_argument("--definitions", default=str(DEFINITIONS_FILE), help="governed definitions YAML")
    p.set_defaults(func=_ingest)

    p = sub.add_parser("run", help="execute a cadence's notebooks and render its board pack")
    p.add_argument("--cadence", choices=("monthly", "weekly", "quarterly"), default="monthly")
    p.add_argument("--period", default=None, help="YYYY-MM, YYYY-Www or YYYY-Qn (default: last complete period)")
    p.add_argument("--data", default=str(PROCESSED_DATA_DIR), help="processed data folder")
    p.add_argument("--out", default=None, help=f"report folder (default {REPORTS_DIR}/<period>)")
    p.add_argument("--definitions", default=str(DEFINITIONS_FILE), help="governed definitions YAML")
    p.add_argument("--actions", default=None, help="folder of '<period>.md' marketing notes (default data/raw/actions)")
    p.add_argument(
        "--engine",
        default=os.environ.get("FUNNEL_KIT_ENGINE", "duckdb"),
        help="duckdb (default), pyspark, or an Ibis connection URL (default from FUNNEL_KIT_ENGINE)",
    )
    p.set_defaults(func=_run)

    p = sub.add_parser("audit", help="re-execute a report from its recorded inputs and compare every output")
    p.add_argument("report_dir", help="a report folder with manifest.json")
    p.set_defaults(func=_audit)

    p = sub.add_parser("email", help="e-mail a report's board pack (SMTP settings from the environment)")
    p.add_argument("report_dir", help="a report folder with board_pack.html")
    p.add_argument("--to", action="append", required=True, help="recipient (repeat for several)")
    p.add_argument("--dry-run", action="store_true", help="write board_pack.eml only; send nothing")
    p.set_defaults(func=_email)

    p = sub.add_parser("definitions", help="validate the governed definitions and print their hash")
    p.add_argument("--file", default=str(DEFINITIONS_FILE), help="definitions YAML")
    p.set_defaults(func=_definitions)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit code 0 on success, 2 with a one-line reason on stderr on a kit error."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
