-- The open tasks (the sweep of tasks whose job ended without ending them reads them) include
-- those waiting for a budget: a job deferred to look at the budgets again (every 5 minutes,
-- or at the budget's reset) takes such a task up, and the sweep settles one whose job ended.

DROP INDEX scheduler.tasks_open;
CREATE INDEX tasks_open ON scheduler.tasks (id)
    WHERE status IN ('queued', 'running', 'waiting_approval', 'waiting_budget');
