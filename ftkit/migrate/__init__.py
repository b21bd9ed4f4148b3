"""Moving off hosted fine-tuning: inventory, record, retrain, prove, switch.

::

    from ftkit.migrate import Migration
    m = Migration("ftjob-abc123", "test.jsonl", backend="hf", model="smollm2-360m")
    m.plan().lines()        # stages, prices, the hyperparameter mapping; spends nothing
    result = m.run()        # record -> retrain -> evaluate -> compare; resumes when run again
    result.message          # "hf:smollm2-360m is not worse than ft:... by more than 5 points, p = ..."

Modules: ``recover`` (task, labels and system prompt from chat data), ``inventory`` (the entry model
and the backend hook), ``record`` (recorded models), ``retrain`` (the equivalent open-model spec
and its mapping), ``plan`` (stages, prices, state), ``workflow`` (the resumable run). See docs/migration.md.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "InventoryEntry",
    "Migration",
    "MigrationPlan",
    "MigrationResult",
    "Recording",
    "RecoveredTask",
    "create_retrain_job",
    "find_recording",
    "record_model",
    "recover_task",
    "retrain_options",
    "retrain_spec",
]

_WHERE = {
    "InventoryEntry": "ftkit.migrate.inventory",
    "Migration": "ftkit.migrate.workflow",
    "MigrationPlan": "ftkit.migrate.plan",
    "MigrationResult": "ftkit.migrate.plan",
    "Recording": "ftkit.migrate.record",
    "RecoveredTask": "ftkit.migrate.recover",
    "create_retrain_job": "ftkit.migrate.retrain",
    "find_recording": "ftkit.migrate.record",
    "record_model": "ftkit.migrate.record",
    "recover_task": "ftkit.migrate.recover",
    "retrain_options": "ftkit.migrate.retrain",
    "retrain_spec": "ftkit.migrate.retrain",
}


def __getattr__(name: str) -> Any:
    # Lazy: backends import ftkit.migrate.recover at load time; the workflow pulls in evaluation and jobs.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'ftkit.migrate' has no attribute {name!r}")
