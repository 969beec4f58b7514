"""The usage ledger (every model, embedding and tool call, with its tokens, cost and outcome)
and money and token budgets (reserved before a model call, settled after it)."""

from gathering.usage.attribution import (
    Attribution,
    attributed,
    charge_task_to,
    current_attribution,
)
from gathering.usage.budgets import (
    Budget,
    BudgetSpec,
    get_budget,
    list_budgets,
    remove_budget,
    set_budget,
)
from gathering.usage.ledger import (
    LedgerEntry,
    ReportFilter,
    csv_cell,
    record,
    record_embedding,
    record_tool_call,
    report,
    summary,
)
from gathering.usage.model_calls import (
    estimated_input_tokens,
    model_call_entry,
    record_failed_call,
    reserve_model_call,
)

__all__ = [
    "Attribution",
    "Budget",
    "BudgetSpec",
    "LedgerEntry",
    "ReportFilter",
    "attributed",
    "charge_task_to",
    "csv_cell",
    "current_attribution",
    "estimated_input_tokens",
    "get_budget",
    "list_budgets",
    "model_call_entry",
    "record",
    "record_embedding",
    "record_failed_call",
    "record_tool_call",
    "remove_budget",
    "report",
    "reserve_model_call",
    "set_budget",
    "summary",
]
