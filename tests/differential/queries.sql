-- The differential suite's read-only queries (tests/test_differential.py).
--
-- Each query starts with a line "-- name: NAME", plus " [ordered]" when its ORDER BY makes the order of
-- the rows total (then the order is compared too; otherwise results are compared as sorted multisets).
-- A query may also be expected to fail: then the SQLSTATE must match.

-- name: users_all
SELECT * FROM users;

-- name: users_key_eq
SELECT * FROM users WHERE user_id = 42 OR user_id = (SELECT min(user_id) FROM users);

-- name: users_key_literal_each [ordered]
SELECT u.* FROM users u WHERE user_id = -7
UNION ALL SELECT u.* FROM users u WHERE user_id = 0
UNION ALL SELECT u.* FROM users u WHERE user_id = 9000000000000000001
UNION ALL SELECT u.* FROM users u WHERE user_id = 1099511627779
UNION ALL SELECT u.* FROM users u WHERE user_id = 123456;

-- name: users_key_in
SELECT user_id, name, score FROM users WHERE user_id IN (-7, 0, 1, 2, 3, 100, 1099511627779, 4999);

-- name: users_key_any_array
SELECT user_id, email FROM users WHERE user_id = ANY ('{10,20,30,40,50,60,70,80,90,0}'::int8[]);

-- name: users_key_not_in
SELECT count(*), sum(score) FROM users WHERE user_id NOT IN (1, 2, 3, 4, 5);

-- name: users_key_range [ordered]
SELECT user_id, name FROM users WHERE user_id BETWEEN 100 AND 600 ORDER BY user_id;

-- name: users_key_eq_and_other
SELECT * FROM users WHERE user_id IN (SELECT user_id FROM users ORDER BY user_id LIMIT 20) AND active;

-- name: users_key_cast_text
SELECT user_id FROM users WHERE user_id::text = '42' OR user_id = '0';

-- name: users_key_eq_null
SELECT * FROM users WHERE user_id = NULL OR user_id IS NULL;

-- name: users_null_columns
SELECT user_id, email IS NULL, country IS NULL, score IS NULL, active IS NULL, tags IS NULL
FROM users WHERE email IS NULL OR country IS NULL OR score IS NULL OR active IS NULL;

-- name: users_is_distinct
SELECT user_id FROM users WHERE active IS DISTINCT FROM true AND score IS NOT DISTINCT FROM NULL;

-- name: users_like_ilike
SELECT user_id, name FROM users WHERE name LIKE 'J%' OR name ILIKE 'zo%' OR email ~ '^u1[0-9]+@example\.org$';

-- name: users_array_ops
SELECT user_id, tags, cardinality(tags), tags[1] FROM users WHERE tags @> '{a}' OR 'x y' = ANY (tags) OR tags = '{}';

-- name: users_order_limit [ordered]
SELECT user_id, name, score FROM users ORDER BY score DESC NULLS LAST, user_id LIMIT 17;

-- name: users_order_offset [ordered]
SELECT user_id FROM users ORDER BY user_id DESC LIMIT 10 OFFSET 25;

-- name: users_order_nulls_first [ordered]
SELECT user_id, country, signup FROM users ORDER BY country NULLS FIRST, signup DESC NULLS LAST, user_id LIMIT 40;

-- name: users_order_text_collation [ordered]
SELECT name, user_id FROM users ORDER BY name, user_id;

-- name: users_count
SELECT count(*), count(email), count(DISTINCT country), min(user_id), max(user_id), sum(user_id) FROM users;

-- name: users_aggregates
SELECT sum(score), avg(score), min(score), max(score), min(signup), max(signup), bool_and(active), bool_or(active),
       every(score > -100), min(name), max(name) FROM users;

-- name: users_group_by
SELECT country, count(*), sum(score), avg(score), min(signup), max(name) FROM users GROUP BY country;

-- name: users_group_by_having [ordered]
SELECT country, active, count(*) AS n FROM users GROUP BY country, active HAVING count(*) > 3
ORDER BY n DESC, country NULLS LAST, active NULLS LAST;

-- name: users_group_by_expression
SELECT date_trunc('year', signup) AS y, count(*), string_agg(user_id::text, ',' ORDER BY user_id)
FROM users GROUP BY 1;

-- name: users_grouping_sets
SELECT country, active, count(*), sum(score) FROM users GROUP BY GROUPING SETS ((country), (active), ());

-- name: users_rollup
SELECT country, extract(year FROM signup) AS y, count(*) FROM users WHERE country IS NOT NULL
GROUP BY ROLLUP (country, extract(year FROM signup));

-- name: users_ordered_aggs
SELECT array_agg(user_id ORDER BY user_id), string_agg(name, '|' ORDER BY name, user_id),
       jsonb_agg(user_id ORDER BY user_id) FILTER (WHERE score > 900)
FROM users;

-- name: users_percentile
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY score), percentile_disc(0.9) WITHIN GROUP (ORDER BY user_id),
       mode() WITHIN GROUP (ORDER BY country) FROM users;

-- name: users_distinct
SELECT DISTINCT country FROM users;

-- name: users_distinct_on [ordered]
SELECT DISTINCT ON (country) country, user_id, score FROM users ORDER BY country, score DESC NULLS LAST, user_id;

-- name: users_distinct_multi
SELECT DISTINCT active, country IS NULL, tags FROM users;

-- name: window_row_number
SELECT user_id, country, row_number() OVER (PARTITION BY country ORDER BY user_id),
       rank() OVER (ORDER BY score DESC NULLS LAST), dense_rank() OVER (PARTITION BY active ORDER BY country)
FROM users;

-- name: window_running_sum
SELECT user_id, score, sum(score) OVER (ORDER BY user_id), avg(score) OVER (ORDER BY user_id ROWS BETWEEN 2 PRECEDING AND 2 FOLLOWING),
       lag(user_id) OVER (ORDER BY user_id), lead(name, 2) OVER (ORDER BY user_id), ntile(4) OVER (ORDER BY user_id)
FROM users;

-- name: window_first_last
SELECT DISTINCT country, first_value(user_id) OVER w, last_value(user_id) OVER w, count(*) OVER (PARTITION BY country)
FROM users WINDOW w AS (PARTITION BY country ORDER BY user_id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING);

-- name: window_on_join
SELECT o.user_id, o.order_id, sum(o.amount) OVER (PARTITION BY o.user_id ORDER BY o.order_id) AS running,
       u.name
FROM orders o JOIN users u ON u.user_id = o.user_id WHERE o.user_id < 400;

-- name: orders_all
SELECT * FROM orders;

-- name: orders_by_user [ordered]
SELECT * FROM orders WHERE user_id = (SELECT user_id FROM orders GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1)
ORDER BY order_id;

-- name: orders_key_and_pk
SELECT * FROM orders WHERE (user_id, order_id) IN (SELECT user_id, order_id FROM orders WHERE order_id % 97 = 0);

-- name: orders_by_product
SELECT product_id, count(*), sum(qty), sum(amount) FROM orders WHERE product_id IN (3, 7, 51) GROUP BY product_id;

-- name: orders_timestamps
SELECT user_id, order_id, ordered_at, ordered_at AT TIME ZONE 'Asia/Tokyo', date_trunc('day', ordered_at),
       extract(epoch FROM ordered_at)
FROM orders WHERE ordered_at >= '2024-06-01' AND ordered_at < '2024-06-03 12:00+02';

-- name: orders_status_case
SELECT CASE WHEN status IS NULL THEN 'none' WHEN status IN ('paid', 'shipped') THEN 'done' ELSE status END AS s,
       count(*), round(avg(amount), 6), max(qty) FROM orders GROUP BY 1;

-- name: join_colocated
SELECT u.user_id, u.name, o.order_id, o.amount FROM users u JOIN orders o ON o.user_id = u.user_id;

-- name: join_colocated_key_filter [ordered]
SELECT u.user_id, u.name, o.order_id, o.status FROM users u JOIN orders o USING (user_id)
WHERE u.user_id IN (SELECT user_id FROM orders ORDER BY user_id LIMIT 3) ORDER BY o.order_id, u.user_id;

-- name: join_colocated_aggregate
SELECT u.country, count(o.*), sum(o.amount), count(DISTINCT u.user_id) FROM users u JOIN orders o USING (user_id)
GROUP BY u.country;

-- name: join_left_outer
SELECT u.user_id, count(o.order_id) AS n FROM users u LEFT JOIN orders o ON o.user_id = u.user_id GROUP BY u.user_id;

-- name: join_right_orphans
SELECT o.user_id, o.order_id FROM users u RIGHT JOIN orders o ON o.user_id = u.user_id WHERE u.user_id IS NULL;

-- name: join_full_outer
SELECT coalesce(u.user_id, o.user_id), count(*) FROM users u FULL JOIN orders o ON o.user_id = u.user_id
WHERE u.user_id IS NULL OR o.user_id IS NULL GROUP BY 1;

-- name: join_non_key
SELECT a.user_id, b.user_id, a.name FROM users a JOIN users b ON a.name = b.name AND a.user_id < b.user_id;

-- name: join_non_key_cross_partition
SELECT u.user_id, o.user_id, o.order_id FROM users u JOIN orders o ON o.order_id = u.user_id;

-- name: join_global
SELECT o.user_id, o.order_id, p.name, p.category, o.qty * p.price AS total FROM orders o
JOIN products p USING (product_id) WHERE p.category = 'toys';

-- name: join_global_left
SELECT p.product_id, p.name, count(o.order_id), sum(o.qty) FROM products p LEFT JOIN orders o USING (product_id)
GROUP BY p.product_id, p.name;

-- name: join_three_way
SELECT c.name, p.category, count(*), sum(o.amount) FROM orders o JOIN users u USING (user_id)
JOIN countries c ON c.code = u.country LEFT JOIN products p USING (product_id) GROUP BY c.name, p.category;

-- name: join_global_only
SELECT p.*, c.* FROM products p CROSS JOIN countries c WHERE p.product_id < 4;

-- name: join_lateral [ordered]
SELECT u.user_id, last.order_id, last.amount FROM users u
CROSS JOIN LATERAL (SELECT order_id, amount FROM orders o WHERE o.user_id = u.user_id
                    ORDER BY order_id DESC LIMIT 2) last
WHERE u.user_id < 300 ORDER BY u.user_id, last.order_id;

-- name: subquery_in
SELECT * FROM users WHERE user_id IN (SELECT user_id FROM orders WHERE amount > 850);

-- name: subquery_exists
SELECT user_id, name FROM users u
WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.user_id AND o.status = 'paid');

-- name: subquery_scalar
SELECT user_id, (SELECT count(*) FROM orders o WHERE o.user_id = u.user_id) AS n,
       (SELECT max(amount) FROM orders o WHERE o.user_id = u.user_id) AS top
FROM users u WHERE user_id % 3 = 0;

-- name: subquery_from [ordered]
SELECT s.user_id, s.total FROM (SELECT user_id, sum(amount) AS total FROM orders GROUP BY user_id) s
WHERE s.total IS NOT NULL ORDER BY s.total DESC, s.user_id LIMIT 10;

-- name: subquery_any_all
SELECT user_id FROM users WHERE score > ALL (SELECT amount / 2 FROM orders WHERE user_id = 0 AND amount IS NOT NULL)
AND score < ANY (SELECT price FROM products WHERE price IS NOT NULL);

-- name: cte_simple
WITH big AS (SELECT user_id, sum(amount) s FROM orders GROUP BY user_id HAVING sum(amount) > 3000)
SELECT u.name, big.s FROM big JOIN users u USING (user_id);

-- name: cte_materialized
WITH m AS MATERIALIZED (SELECT * FROM orders WHERE status = 'paid'), n AS NOT MATERIALIZED (SELECT * FROM users)
SELECT n.country, count(*) FROM m JOIN n USING (user_id) GROUP BY n.country;

-- name: cte_recursive [ordered]
WITH RECURSIVE r(n, id) AS (SELECT 1, min(user_id) FROM users
    UNION ALL SELECT n + 1, (SELECT min(user_id) FROM users WHERE user_id > r.id) FROM r WHERE n < 15)
SELECT * FROM r ORDER BY n;

-- name: union_distinct
SELECT user_id FROM users UNION SELECT user_id FROM orders;

-- name: union_all
SELECT user_id, 'u' FROM users WHERE user_id < 100 UNION ALL SELECT user_id, 'o' FROM orders WHERE user_id < 100;

-- name: intersect_except
(SELECT user_id FROM users INTERSECT SELECT user_id FROM orders)
UNION ALL (SELECT user_id FROM orders EXCEPT SELECT user_id FROM users);

-- name: values_join
SELECT v.k, u.name FROM (VALUES (0::int8), (-7), (5), (NULL)) v(k) LEFT JOIN users u ON u.user_id = v.k;

-- name: products_global_all
SELECT * FROM products;

-- name: products_float [ordered]
SELECT product_id, weight, weight * 2, weight::float4, round(weight::numeric, 3) FROM products ORDER BY product_id;

-- name: countries_global
SELECT * FROM countries WHERE vat IS NULL OR vat > 10;

-- name: tags_text_key_eq
SELECT * FROM tags WHERE tag = '' OR tag = 'ünïcödé' OR tag IN ('with space', 'nope');

-- name: tags_all
SELECT tag, uses, first_seen FROM tags;

-- name: tags_prefix [ordered]
SELECT tag, uses FROM tags WHERE tag LIKE 'a%' OR tag > 'x' ORDER BY tag;

-- name: alltypes_all
SELECT * FROM alltypes;

-- name: alltypes_key_eq
SELECT * FROM alltypes WHERE k IN (1, 38, 75, -11, -21, 1000000);

-- name: alltypes_ordered_by_each [ordered]
SELECT k, c_numeric, c_float8, c_float4, c_ts, c_tstz, c_interval FROM alltypes
ORDER BY c_numeric NULLS FIRST, c_float8 DESC, c_tstz, k;

-- name: alltypes_filters
SELECT k FROM alltypes WHERE c_float8 = 'NaN' OR c_numeric = 'NaN' OR c_ts = '0001-01-01' OR c_date = '9999-12-31'
OR c_float4 = '-Infinity' OR c_bool IS NULL;

-- name: alltypes_numeric_filters
SELECT k, c_int2, c_int4, c_int8 FROM alltypes WHERE c_int2 = 32767 OR c_int4 < -2000000000 OR c_int8 = 9223372036854775807;

-- name: alltypes_text_types
SELECT k, c_text, length(c_text), c_varchar, c_char, length(c_char), upper(c_text) FROM alltypes
WHERE c_text LIKE '%é%' OR c_char = 'a' OR c_varchar IS NULL;

-- name: alltypes_json
SELECT k, c_jsonb, c_jsonb -> 'a', c_jsonb ->> 'n', jsonb_typeof(c_jsonb), c_json::text, c_json -> 'dup'
FROM alltypes WHERE c_jsonb @> '{"a": 1}' OR c_jsonb ? 'n' OR jsonb_typeof(c_jsonb) IN ('array', 'string');

-- name: alltypes_arrays
SELECT k, c_int_arr, array_length(c_int_arr, 1), c_text_arr, c_int_arr[2] FROM alltypes
WHERE c_int_arr && '{1,5}' OR c_text_arr @> '{a}' OR array_ndims(c_int_arr) = 2;

-- name: alltypes_net_uuid_bytes
SELECT k, c_uuid, c_bytea, length(c_bytea), c_inet, host(c_inet), c_cidr, c_macaddr, c_bit, c_varbit FROM alltypes
WHERE c_inet << '10.0.0.0/8' OR family(c_inet) = 6 OR c_bytea = '\xdeadbeef' OR c_uuid < '20000000-0000-0000-0000-000000000000' OR c_bit & B'10000000' = B'10000000';

-- name: alltypes_range_point
SELECT k, c_range, c_point, lower(c_range), upper_inf(c_range), c_point[0] FROM alltypes
WHERE c_range @> 4 OR isempty(c_range) OR c_point ~= point '(0,0)';

-- name: alltypes_dates
SELECT k, c_date, c_time, c_ts, c_tstz, c_ts + c_interval, c_date - date '2000-01-01', c_interval * 2
FROM alltypes WHERE c_date IS NOT NULL AND c_date < '9000-01-01' AND c_date > '1000-01-01';

-- name: alltypes_group_by_types
SELECT c_bool, c_char, c_interval, count(*), min(c_ts), max(c_tstz), min(c_uuid::text), max(c_inet), max(c_bytea::text)
FROM alltypes GROUP BY c_bool, c_char, c_interval;

-- name: alltypes_distinct_types
SELECT DISTINCT c_jsonb, c_int_arr, c_range FROM alltypes;

-- name: alltypes_aggregate_floats
SELECT count(*), min(c_float8), max(c_float8), min(c_float4), max(c_float4), sum(c_numeric), max(c_numeric),
       sum(c_int8::numeric), sum(c_int4), sum(c_int2), bit_or(c_int4), bit_and(c_int2)
FROM alltypes;

-- name: alltypes_text_casts
SELECT k, c_tstz::text, c_interval::text, c_float8::text, c_numeric::text, c_jsonb::text, to_char(c_ts, 'YYYY-MM-DD HH24:MI')
FROM alltypes WHERE k % 2 = 0;

-- name: error_division_by_zero
SELECT user_id, 1 / (user_id % 7) FROM users;

-- name: error_bad_cast
SELECT user_id, name::int FROM users;

-- name: error_on_remote_rows
SELECT 1 / (c_int2 - c_int2) FROM alltypes WHERE k > 0;

-- name: for_share_subquery
SELECT count(*) FROM (SELECT * FROM users WHERE user_id = 42 FOR SHARE) s;

-- name: select_for_update_key
SELECT user_id, name FROM users WHERE user_id IN (0, -7) FOR UPDATE;

-- name: set_returning
SELECT user_id, unnest(tags) FROM users WHERE tags IS NOT NULL;

-- name: generate_series_join
SELECT g, u.name FROM generate_series(-10, 50) g JOIN users u ON u.user_id = g;

-- name: edge_all
SELECT * FROM edge;

-- name: edge_values_as_text
SELECT k, d::text, t::text, ts::text, tz::text, i::text, justify_interval(i), isfinite(d), extract(year FROM ts)
FROM edge;

-- name: edge_filters
SELECT k FROM edge WHERE d = 'infinity' OR ts = '-infinity' OR t = '24:00' OR i > interval '1 year' OR d < '0001-01-01';

-- name: edge_order [ordered]
SELECT k, d, ts, i FROM edge ORDER BY d NULLS FIRST, ts DESC NULLS LAST, i, k;

-- name: edge_key_eq
SELECT * FROM edge WHERE k IN (1, 2, 3, 30, 59);

-- name: g_edge_all
SELECT * FROM g_edge;
