"""Goals: a tree of goals and subgoals with blocking dependencies, success criteria, activities
and a rolled-up progress (`store`); starting one launches a background task or a pipeline run
per goal, the scheduler's sweep moves started goals on, and an agent can split a goal into
subgoals (`work`)."""

from gathering.scheduler.goals.store import (
    GoalChange,
    GoalIn,
    GoalNode,
    GoalRecord,
    activities,
    add_dependency,
    change_goal,
    create_goal,
    delete_goal,
    dependencies_of,
    get_goal,
    goal_tree,
    list_goals,
    remove_dependency,
)
from gathering.scheduler.goals.work import cancel_goal, decompose_goal, settle_goals, start_goal

__all__ = [
    "GoalChange",
    "GoalIn",
    "GoalNode",
    "GoalRecord",
    "activities",
    "add_dependency",
    "cancel_goal",
    "change_goal",
    "create_goal",
    "decompose_goal",
    "delete_goal",
    "dependencies_of",
    "get_goal",
    "goal_tree",
    "list_goals",
    "remove_dependency",
    "settle_goals",
    "start_goal",
]
