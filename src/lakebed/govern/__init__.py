"""Governance: data quality checks (write-audit-publish) and column lineage.

Example::

    checks = parse_checks(settings["checks"], table="silver.orders", file="orders.yml")
    result = audit(new_rows, checks, table="silver.orders", lookup=lambda q: lh.sql(q).arrow())
    if result.failed:
        ...  # publish nothing; result.results say which checks failed and why
"""

from lakebed.govern.check_kinds import CHECK_KINDS, Check, RowCheck, Severity, TableCheck
from lakebed.govern.checks import (
    Audit,
    add_row_results,
    audit,
    audit_summary,
    blocking,
    parse_checks,
    raise_if_blocking,
)
from lakebed.govern.lineage import ColumnEdge, Transform, column_lineage
from lakebed.govern.lineage_view import lineage_reach, lineage_tree, table_edges
from lakebed.metastore.checks import CheckResult, CheckStatus

__all__ = [
    "CHECK_KINDS",
    "Audit",
    "Check",
    "CheckResult",
    "CheckStatus",
    "ColumnEdge",
    "RowCheck",
    "Severity",
    "TableCheck",
    "Transform",
    "add_row_results",
    "audit",
    "audit_summary",
    "blocking",
    "column_lineage",
    "lineage_reach",
    "lineage_tree",
    "parse_checks",
    "raise_if_blocking",
    "table_edges",
]
