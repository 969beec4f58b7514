"""Background agent tasks: an agent works on a goal on its own, in a plan / act / observe loop
run as jobs, every step stored before the next (`loop`), within budgets of steps, tokens,
seconds and dollars; paused, resumed and cancelled from any instance (`store`)."""

from gathering.scheduler.tasks.store import (
    TaskRecord,
    TaskSpec,
    TaskStep,
    cancel_task,
    get_task,
    list_tasks,
    pause_task,
    resume_answered,
    resume_task,
    start_task,
    task_steps,
)

__all__ = [
    "TaskRecord",
    "TaskSpec",
    "TaskStep",
    "cancel_task",
    "get_task",
    "list_tasks",
    "pause_task",
    "resume_answered",
    "resume_task",
    "start_task",
    "task_steps",
]
