"""Write the kit's own thin notebooks (01-03) without outputs. Run once after editing; the .ipynb files are the source."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PARAMS = '''period = "2026-10"
cadence = "monthly"
as_of = ""
data_dir = "../data/processed"
out_dir = "../reports/scratch"
definitions_path = "../config/definitions.yml"
engine = "duckdb"'''

OPEN = "ctx = open_context(data_dir, period, as_of or None, definitions_path, engine)"


def notebook(cells: list, params: str = PARAMS) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    out = [cells[0], new_code_cell(params, metadata={"tags": ["parameters"]})] + cells[1:]
    for i, c in enumerate(out):
        c["id"] = f"cell-{i:02d}"
    nb.cells = out
    return nb


BRIEF = notebook(
    [
        new_markdown_cell("# Executive brief\nWhat moved, what caused it, what it means for plan, what marketing is doing."),
        new_code_cell(
            "from pathlib import Path\n\n"
            "from IPython.display import HTML, display\n\n"
            "from analysis import brief\n"
            "from analysis.config import load_definitions\n"
            "from analysis.display import show_table\n"
            "from analysis.metrics import read_metrics\n"
            "from analysis.periods import parse_period"
        ),
        new_code_cell(
            "definitions = load_definitions(definitions_path)\n"
            "metrics = read_metrics(Path(out_dir) / \"metrics.parquet\")\n"
            "p = parse_period(period)\n"
            "display(HTML(brief.brief_html(metrics, definitions, p.label, p.months, actions_path)))"
        ),
        new_code_cell(
            "moved = brief.moves(metrics, definitions)\n"
            "if not moved.empty:\n"
            "    show_table(brief.moves_table(moved), "
            "caption=\"Tested moves: q-values across the whole pack's family of tests\")"
        ),
    ],
    params=PARAMS + '\nactions_path = "../data/raw/actions/2026-10.md"',
)

QUALITY = notebook(
    [
        new_markdown_cell("# Data quality\nRows in, kept and quarantined by rule; freshness; what each source covers."),
        new_code_cell(
            "from analysis import data_quality as dq\n"
            "from analysis.context import open_context\n"
            "from analysis.display import show_note, show_table\n"
            "from analysis.metrics import write_section_metrics"
        ),
        new_code_cell(OPEN + "\nmanifest = ctx.ingest_manifest"),
        new_markdown_cell("## Row accounting\nRows in = rows kept + rows quarantined, for every table."),
        new_code_cell(
            "accounting = dq.row_accounting(manifest)\n"
            "show_table(accounting, caption=\"Rows per canonical table\")\n"
            "if not accounting[\"balanced\"].all():\n"
            "    show_note(\"Row accounting does not balance: see the ingest manifest.\", kind=\"warning\")"
        ),
        new_code_cell(
            "by_rule = dq.quarantine_by_rule(manifest)\n"
            "if by_rule.empty:\n"
            "    show_note(\"No rows were quarantined.\")\n"
            "else:\n"
            "    show_table(by_rule, caption=\"Quarantined rows by rule\")\n"
            "    show_table(dq.quarantine_sample(ctx), caption=\"First quarantined rows (where to look)\")"
        ),
        new_markdown_cell("## Freshness and coverage"),
        new_code_cell(
            "show_table(dq.freshness(ctx), caption=\"Latest record per table, days behind the as-of instant\", "
            "float_format=\"{:,.1f}\")\n"
            "show_table(dq.sections_enabled(ctx), caption=\"Sections the provided tables switch on\")\n"
            "cov = dq.coverage(ctx)\n"
            "show_table(cov[cov[\"filled_share\"] < 1].head(15), caption=\"Columns not always filled (share of rows with a value)\")"
        ),
        new_code_cell("write_section_metrics(dq.quality_metrics(ctx), out_dir, dq.SECTION);"),
    ]
)

FUNNEL = notebook(
    [
        new_markdown_cell(
            "# Funnel conversion trends\n"
            "Cohort conversion stage to stage: of those entering a stage in a month, the share reaching the next "
            "within the governed window. Immature cohorts are shown dotted and not tested."
        ),
        new_code_cell(
            "from analysis import funnel\n"
            "from analysis.context import open_context\n"
            "from analysis.display import show_chart, show_note, show_table\n"
            "from analysis.metrics import empty, write_section_metrics"
        ),
        new_code_cell(
            OPEN + "\n"
            "note = ctx.missing_note(\"funnel conversion\", \"leads\")\n"
            "if note:\n"
            "    show_note(note)\n"
            "    metrics = empty()\n"
            "else:\n"
            "    counts, metrics = funnel.funnel_metrics(ctx.tables, ctx.definitions, ctx.as_of, ctx.period.months[-1], ctx.con)"
        ),
        new_markdown_cell("## Every stage, latest mature cohort against its trailing baseline"),
        new_code_cell(
            "if not note:\n"
            "    show_table(funnel.summary_table(metrics, ctx.definitions), "
            "caption=\"Latest mature cohort vs the pooled baseline months (score test; exact test on small cells)\")\n"
            "    show_chart(funnel.stage_grid_chart(metrics))"
        ),
        new_markdown_cell("## MQL→SQL by segment and origin"),
        new_code_cell(
            "if not note:\n"
            "    show_chart(funnel.trend_chart(metrics, by=\"segment\"))\n"
            "    show_table(funnel.breakdown_table(metrics, \"mql_to_sql\", \"segment\"), caption=\"MQL→SQL by segment\")\n"
            "    show_table(funnel.breakdown_table(metrics, \"mql_to_sql\", \"origin\"), caption=\"MQL→SQL by origin\")"
        ),
        new_markdown_cell("## Mix or rate?\nHow much of the overall change comes from segment mix, and how much from rates within segments."),
        new_code_cell(
            "if not note:\n"
            "    show_table(funnel.decomposition_table(metrics), caption=\"Midpoint decomposition of the change in each overall rate, by segment\")"
        ),
        new_code_cell("write_section_metrics(metrics, out_dir, funnel.SECTION);"),
    ]
)

OPERATIONS = notebook(
    [
        new_markdown_cell(
            "# Pipeline operations\n"
            "New pipeline by source against its recent run rate, and the open deals most likely to slip."
        ),
        new_code_cell(
            "from analysis import operations as ops\n"
            "from analysis.context import open_context\n"
            "from analysis.display import show_chart, show_note, show_table\n"
            "from analysis.metrics import empty, write_section_metrics"
        ),
        new_code_cell(
            OPEN + "\n"
            "note = ctx.missing_note(\"pipeline operations\", \"opportunities\")\n"
            "if note:\n"
            "    show_note(note)\n"
            "    metrics = empty()"
        ),
        new_markdown_cell("## New pipeline by source"),
        new_code_cell(
            "if not note:\n"
            "    pipeline = ops.new_pipeline_by_source(ctx)\n"
            "    show_chart(ops.new_pipeline_chart(pipeline))\n"
            "    show_table(ops.pipeline_table(pipeline), caption=\"Deals and amount created this period; run rate = the prior weeks scaled to one period\", "
            "float_format=\"{:,.1f}\")"
        ),
        new_markdown_cell("## Deals most likely to slip\nOpen longer than three in four won deals of their segment took to close."),
        new_code_cell(
            "if not note:\n"
            "    slip = ops.slip_summary(ctx)\n"
            "    show_table(slip, caption=\"Open deals past their segment's 75th-percentile cycle\", float_format=\"{:,.2f}\")\n"
            "    show_table(ops.deals_likely_to_slip(ctx), caption=\"Largest late deals (ids and teams only)\", float_format=\"{:,.0f}\")\n"
            "    metrics = ops.operations_metrics(ctx, pipeline, slip)"
        ),
        new_code_cell("write_section_metrics(metrics, out_dir, ops.SECTION);"),
    ],
    params=PARAMS.replace('period = "2026-10"', 'period = "2026-W43"').replace('cadence = "monthly"', 'cadence = "weekly"'),
)

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1] / "notebooks"
    for name, nb in (
        ("01_executive_brief", BRIEF),
        ("02_data_quality", QUALITY),
        ("03_funnel_conversion", FUNNEL),
        ("09_pipeline_operations", OPERATIONS),
    ):
        nbformat.validate(nb)
        nbformat.write(nb, root / f"{name}.ipynb")
