"""Validation: row rules, batch rules and Great Expectations suites over canonical events.

Serves the `validate` stage: valid rows out, the rest quarantined with the rule that rejected them.
"""
