"""Audit: plan, runner, evaluators, metrics, report writers."""
