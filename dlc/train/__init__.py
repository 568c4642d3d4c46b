"""Training: the loop and its resumable state (trainer), evaluation, selection rules, the cost plan, config checks."""
