"""Acting on the world: planning, checks against the world, approvals, dispatch, verify, undo."""
