-- A background task whose model call a budget refused waits (`waiting_budget`), instead of
-- being paused as if a person had stopped it: its error is the budget's refusal, and a job
-- deferred to the budget's reset, or to the next look (every 5 minutes), takes it up then
-- (none for a call larger than the whole limit); an admin who raises the budget resumes it
-- at once. The sweep of tasks whose job ended looks at waiting ones too (the index).

ALTER TABLE scheduler.tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE scheduler.tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('queued', 'running', 'paused', 'waiting_approval', 'waiting_budget',
                      'succeeded', 'failed', 'cancelled'));

DROP INDEX scheduler.tasks_open;
CREATE INDEX tasks_open ON scheduler.tasks (id)
    WHERE status IN ('queued', 'running', 'waiting_approval', 'waiting_budget');
