"""Acting on the world: planning, world checks, approvals, dispatch, verify, rollback."""
