"""The reference controller (`enforcer controller`): its own program, beside the per-node enforcer."""
