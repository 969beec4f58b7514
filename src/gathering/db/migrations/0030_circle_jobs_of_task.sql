-- The circles' agent jobs of a task, found by the task's id: the offers duty looks for a task
-- in an agent's hands whose last work (or review) job ended without an outcome (it failed on
-- an unexpected error, or was cancelled by hand), which nothing else would ever move on.
CREATE INDEX circle_jobs_of_task ON procrastinate_jobs ((args->>'task_id'), id)
    WHERE task_name IN ('circles:work', 'circles:review');
CREATE INDEX tasks_in_review ON circle.tasks (id) WHERE status = 'in_review';

-- A review job that ended without an outcome, once the sweep handed its review on (the
-- member stays asked, without a verdict: this keeps the sweep from handing it on again).
CREATE TABLE circle.ended_review_jobs (
    job_id   bigint PRIMARY KEY,
    task_id  bigint NOT NULL REFERENCES circle.tasks (id) ON DELETE CASCADE
);
