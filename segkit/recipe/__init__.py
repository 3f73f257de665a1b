"""The whole recipe on a user's dataset (`segkit recipe init|run|status`)."""
