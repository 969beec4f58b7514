-- The goal sweep takes the goals it may move on in turn: each goal it looks at is stamped, and
-- the goals looked at longest ago come first, so goals that cannot move yet (waiting for room
-- to start, or for a goal above them) never crowd out the others, whoever owns them.

ALTER TABLE scheduler.goals ADD COLUMN swept_at timestamptz;
