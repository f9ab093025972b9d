"""shoal's planner: which partitions and nodes a query needs and what SQL is pushed down to them."""
