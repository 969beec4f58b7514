-- A cap on the background tasks one owner has running at once, and a cheaper idle round of
-- the scheduler duty (every half second, on one instance).

-- The tasks of an owner that are queued or running: a job about to start a task counts the
-- owner's running ones (under the owner's lock), and a task that stops running wakes the
-- owner's oldest task waiting for room.
CREATE INDEX tasks_at_work_of_owner ON scheduler.tasks (owner_id, status, id)
    WHERE status IN ('queued', 'running');

-- Whether a pipeline was saved or deleted since the duty last looked: the latest save, read
-- from the end of this index, and the pipelines' trigger schedules (few), each looked up by
-- the id in its name, instead of a count of every pipeline and every schedule.
CREATE INDEX pipelines_by_update ON pipeline.pipelines (updated_at);
CREATE INDEX schedules_of_pipeline_triggers ON scheduler.schedules (name)
    WHERE starts_with(name, 'pipeline:');

-- The active event schedules, which every round reads in id order (an event schedule has no
-- next_run_at, so schedules_due does not hold it): not every schedule.
CREATE INDEX schedules_of_events ON scheduler.schedules (id)
    WHERE status = 'active' AND event_cursor IS NOT NULL;
