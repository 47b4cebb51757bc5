"""The audit log: one tamper-evident record per request, in one or more sinks.

::

    completion listener (``listener``)  builds the record (``record``)
        → AuditLog (``audit_log``): the policy on a failing sink, reloads
        → AuditWriter (``writer``): a thread, a bounded queue, durability modes
        → sinks, each with its own hash chain (``chain``):
          file (``file_sink``, rotated), stdout (``stdout_sink``), OTLP logs (``otlp_sink``)

    ``sidegate audit verify`` (``verify``) checks a chain across rotated files.
"""
