-- A background task whose model call a budget refused waits (`waiting_budget`), instead of
-- being paused as if a person had stopped it: its error is the budget's refusal, and a job
-- deferred to the budget's reset (none for a `total` budget, or for a call larger than the
-- whole limit) takes it up then; an admin who raises the budget resumes it at once.

ALTER TABLE scheduler.tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE scheduler.tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('queued', 'running', 'paused', 'waiting_approval', 'waiting_budget',
                      'succeeded', 'failed', 'cancelled'));
