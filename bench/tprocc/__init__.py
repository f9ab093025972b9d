"""TPROC-C, HammerDB's derivative of TPC-C, in Python (HammerDB itself cannot be installed here).

``schema`` (the nine tables, HammerDB's PostgreSQL column sets), ``functions.sql`` (the five transactions
as PL/pgSQL functions, one call per transaction, as HammerDB drives PostgreSQL), ``datagen`` (the initial
population, written once per run to files so that every system loads the same rows), ``loader`` (COPY,
indexes, sharding by warehouse), ``driver`` (virtual users, the mix, NOPM and TPM), ``checks`` (HammerDB's
consistency checks) and ``suite`` (all of it on every system of a run).
"""
