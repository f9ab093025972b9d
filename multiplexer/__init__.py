"""shoal's multiplexer: one per node, one channel per pair of nodes, a pool of workers.

Backends hand remote work to their node's multiplexer; multiplexers exchange it over one
authenticated channel per pair of nodes; workers run it against their own node and stream binary
results back.  M clients and N nodes cost M + N connections, never M x N.
"""
