"""Operator commands (status, explain, dispatch, drain, doctor, drill) as plain async functions.

The CLI in :mod:`switchboard.cli` is a thin shell over these, so tests and `switchboard dev`
call the same code.
"""
