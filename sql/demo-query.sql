-- make demo: the same queries on every node (each node sees the whole cluster)
\pset footer off
SELECT current_setting('shoal.node_name') AS "this node",
       count(*) FILTER (WHERE is_local) AS "partitions held here", count(*) AS "partitions in all"
  FROM shoal.partitions;

-- revenue by country: co-located join of users and orders, plus the local copy of products
SELECT u.country, count(DISTINCT u.user_id) AS users, count(*) AS orders,
       sum(o.qty * p.price) AS revenue
  FROM users u JOIN orders o USING (user_id) JOIN products p USING (sku)
 GROUP BY u.country ORDER BY revenue DESC;

-- one user's orders: the plan reads one partition, on the node that holds it
EXPLAIN (VERBOSE, COSTS OFF) SELECT sku, qty FROM orders WHERE user_id = 3 ORDER BY order_id LIMIT 3;
SELECT sku, qty FROM orders WHERE user_id = 3 ORDER BY order_id LIMIT 3;
