-- The differential suite's writes (tests/test_differential.py), run in this order.
--
-- Each case starts with "-- name: NAME; tables: T1 T2..." and holds one or more statements, each ending
-- with ";" at the end of a line. A case runs on plain PostgreSQL and on one shoal node (a different one
-- from case to case); every statement's row count and rows (as a multiset), or its SQLSTATE when it
-- fails, must match, and afterwards the listed tables must hold the same rows on every node.

-- name: insert_single; tables: d_users
INSERT INTO d_users VALUES (10001, 'new one', 'n1@example.com', 'de', 1.5, true) RETURNING *;

-- name: insert_multi_row; tables: d_users
INSERT INTO d_users (user_id, name) VALUES (10002, 'b'), (10003, 'c'), (10004, 'd'), (-10005, 'e'), (10006, 'f'),
    (10007, 'g'), (10008, 'h'), (10009, 'i'), (9223372036854775807, 'max'), (-9223372036854775808, 'min')
RETURNING user_id, score, active;

-- name: insert_multi_row_no_returning; tables: d_orders
INSERT INTO d_orders (user_id, order_id, product_id, qty, amount, ordered_at) VALUES
    (10001, 1, 1, 1, 9.99, '2024-01-01 10:00+00'), (10002, 1, 2, 2, 19.98, '2024-01-02 10:00+00'),
    (10003, 1, NULL, 3, NULL, NULL), (10004, 7, 4, 4, 4.44, '9999-12-31 23:00+00'), (10001, 2, 5, 5, 0.01, '2024-03-01');

-- name: insert_defaults; tables: d_orders
INSERT INTO d_orders (user_id, order_id) VALUES (10005, 1) RETURNING status, qty, amount IS NULL;
INSERT INTO d_orders DEFAULT VALUES;

-- name: insert_duplicate_key_fails; tables: d_users
INSERT INTO d_users (user_id, name) VALUES (10001, 'dup');

-- name: insert_multi_row_one_duplicate_inserts_nothing; tables: d_users
INSERT INTO d_users (user_id, name) VALUES (20001, 'x'), (20002, 'y'), (20003, 'z'), (20004, 'w'), (10001, 'dup');

-- name: insert_null_key_fails; tables: d_users
INSERT INTO d_users (user_id, name) VALUES (NULL, 'no key');

-- name: insert_check_types_fail; tables: d_orders
INSERT INTO d_orders (user_id, order_id, qty) VALUES (30001, 1, 40000);

-- name: on_conflict_do_nothing; tables: d_users
INSERT INTO d_users (user_id, name) VALUES (10001, 'again'), (10010, 'ten'), (10002, 'again')
ON CONFLICT DO NOTHING RETURNING user_id, name;

-- name: on_conflict_do_nothing_on_key; tables: d_users
INSERT INTO d_users (user_id, name) VALUES (10010, 'again'), (10011, 'eleven')
ON CONFLICT (user_id) DO NOTHING RETURNING *;

-- name: on_conflict_do_update_on_key; tables: d_users
INSERT INTO d_users (user_id, name, score) VALUES (10001, 'updated', 5), (10012, 'twelve', 1), (10003, 'c2', 2)
ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, score = d_users.score + excluded.score
RETURNING *;

-- name: on_conflict_do_update_where; tables: d_users
INSERT INTO d_users (user_id, name) VALUES (10001, 'only if active'), (10004, 'only if active')
ON CONFLICT (user_id) DO UPDATE SET name = excluded.name || ' ' || d_users.user_id WHERE d_users.score > 3
RETURNING user_id, name;

-- name: on_conflict_composite_key; tables: d_orders
INSERT INTO d_orders (user_id, order_id, qty) VALUES (10001, 1, 1), (10001, 3, 1), (10002, 1, 1)
ON CONFLICT (user_id, order_id) DO UPDATE SET qty = d_orders.qty + excluded.qty, status = 'merged'
RETURNING user_id, order_id, qty, status;

-- name: on_conflict_in_existing_rows; tables: d_users
INSERT INTO d_users (user_id, name, score) SELECT user_id, 'again', 1 FROM d_users WHERE user_id % 4 = 0
ON CONFLICT (user_id) DO UPDATE SET score = d_users.score + 1 RETURNING user_id, score;

-- name: insert_select_same_table; tables: d_orders
INSERT INTO d_orders (user_id, order_id, product_id, qty, amount)
SELECT user_id, 900000 + row_number() OVER (ORDER BY user_id), 1, 1, score FROM d_users WHERE user_id % 5 = 0
RETURNING user_id, order_id, amount;

-- name: insert_select_from_read_tables; tables: d_users
INSERT INTO d_users (user_id, name, email, country, score, active)
SELECT user_id + 200000, name, email, country, coalesce(score, 0), coalesce(active, true) FROM users
WHERE user_id % 7 = 1;

-- name: insert_select_into_global; tables: d_products
INSERT INTO d_products SELECT product_id + 100, name, price FROM products WHERE category = 'books' RETURNING product_id;

-- name: insert_select_global_into_distributed; tables: d_orders
INSERT INTO d_orders (user_id, order_id, product_id, qty, amount)
SELECT 10001, 500 + product_id, product_id, 1, price FROM d_products RETURNING order_id;

-- name: update_by_key; tables: d_users
UPDATE d_users SET score = score + 10 WHERE user_id = 10001 RETURNING *;

-- name: update_by_key_in; tables: d_users
UPDATE d_users SET name = name || '!' WHERE user_id IN (10001, 10002, -10005, 9223372036854775807, 424242)
RETURNING user_id, name;

-- name: update_without_key; tables: d_users
UPDATE d_users SET active = NOT active WHERE country = 'de' RETURNING user_id, active;

-- name: update_all_rows_no_returning; tables: d_orders
UPDATE d_orders SET amount = amount * 2 WHERE amount IS NOT NULL;

-- name: update_set_nulls; tables: d_users
UPDATE d_users SET email = NULL, country = NULL WHERE user_id % 11 = 0 RETURNING user_id, email, country;

-- name: update_from_colocated; tables: d_orders
UPDATE d_orders o SET amount = u.score FROM d_users u WHERE u.user_id = o.user_id AND u.country = 'fr'
RETURNING o.user_id, o.order_id, o.amount;

-- name: update_correlated_subquery; tables: d_users
UPDATE d_users SET score = (SELECT count(*) FROM d_orders o WHERE o.user_id = d_users.user_id) WHERE user_id < 1000;

-- name: update_from_global; tables: d_orders
UPDATE d_orders o SET amount = p.price * o.qty FROM d_products p WHERE p.product_id = o.product_id AND o.user_id > 2000
RETURNING o.user_id, o.order_id, o.amount;

-- name: update_distribution_key; tables: d_users
UPDATE d_users SET user_id = user_id + 300000 WHERE user_id IN (10002, 10003, 10004) RETURNING *;

-- name: update_distribution_key_many_rows; tables: d_orders
UPDATE d_orders SET user_id = -user_id WHERE order_id % 10 = 3 RETURNING user_id, order_id;

-- name: update_distribution_key_by_expression; tables: d_users
UPDATE d_users SET user_id = user_id * 1000 + 1 WHERE user_id BETWEEN 1 AND 600;

-- name: update_distribution_key_conflict_fails; tables: d_users
UPDATE d_users SET user_id = 10001 WHERE user_id = 10012;

-- name: update_key_and_other_columns; tables: d_orders
UPDATE d_orders SET user_id = 10001, order_id = order_id + 77000, status = 'moved' WHERE user_id = 10002
RETURNING *;

-- name: update_global; tables: d_products
UPDATE d_products SET price = price * 1.1 WHERE product_id % 3 = 0 RETURNING *;

-- name: delete_by_key; tables: d_users
DELETE FROM d_users WHERE user_id = 10012 RETURNING *;

-- name: delete_by_key_in; tables: d_users
DELETE FROM d_users WHERE user_id IN (10006, 10007, -9223372036854775808, 31337) RETURNING user_id;

-- name: delete_without_key; tables: d_orders
DELETE FROM d_orders WHERE status = 'cancelled' RETURNING user_id, order_id;

-- name: delete_using_colocated; tables: d_orders
DELETE FROM d_orders o USING d_users u WHERE u.user_id = o.user_id AND u.active = false RETURNING o.*;

-- name: delete_subquery; tables: d_users
DELETE FROM d_users WHERE user_id NOT IN (SELECT user_id FROM d_orders) AND user_id > 200000 RETURNING user_id;

-- name: delete_global; tables: d_products
DELETE FROM d_products WHERE price IS NULL OR product_id > 120 RETURNING product_id;

-- name: delete_no_rows; tables: d_users
DELETE FROM d_users WHERE user_id = 123456789 RETURNING *;

-- name: writable_cte_move_rows; tables: d_orders
WITH moved AS (DELETE FROM d_orders WHERE qty > 18 RETURNING *)
INSERT INTO d_orders SELECT user_id, order_id + 1000000, product_id, qty, amount, 'archived', ordered_at FROM moved
RETURNING user_id, order_id;

-- name: transaction_commit; tables: d_users d_orders d_products
BEGIN;
INSERT INTO d_users (user_id, name) VALUES (40001, 'tx1'), (40002, 'tx2');
INSERT INTO d_orders (user_id, order_id, qty) VALUES (40001, 1, 1), (40002, 1, 2);
UPDATE d_users SET score = 99 WHERE user_id IN (40001, 10001);
DELETE FROM d_orders WHERE user_id = 10001 AND order_id = 2;
UPDATE d_products SET name = name || ' (tx)' WHERE product_id = 1;
SELECT count(*) FROM d_users WHERE user_id >= 40001;
COMMIT;

-- name: transaction_rollback; tables: d_users d_orders d_products
BEGIN;
INSERT INTO d_users (user_id, name) VALUES (40003, 'gone');
UPDATE d_orders SET qty = 0;
DELETE FROM d_products;
SELECT count(*), sum(qty) FROM d_orders;
ROLLBACK;

-- name: transaction_error_rolls_back; tables: d_users d_orders
BEGIN;
INSERT INTO d_users (user_id, name) VALUES (40004, 'gone too');
UPDATE d_orders SET qty = qty + 1 WHERE user_id = 40001;
INSERT INTO d_users (user_id, name) VALUES (40001, 'duplicate');
SELECT 1;
COMMIT;

-- name: savepoints; tables: d_users d_orders
BEGIN;
INSERT INTO d_users (user_id, name) VALUES (40005, 'kept');
SAVEPOINT s1;
DELETE FROM d_orders;
INSERT INTO d_users (user_id, name) VALUES (40006, 'undone');
ROLLBACK TO SAVEPOINT s1;
UPDATE d_orders SET status = 'sp' WHERE user_id = 40002;
SAVEPOINT s2;
INSERT INTO d_users (user_id, name) VALUES (40005, 'duplicate');
ROLLBACK TO SAVEPOINT s2;
INSERT INTO d_users (user_id, name) VALUES (40007, 'kept too');
COMMIT;

-- name: read_your_writes_in_transaction; tables: d_users
BEGIN;
UPDATE d_users SET name = 'rw' WHERE user_id % 3 = 0;
SELECT user_id, name FROM d_users WHERE name = 'rw';
DELETE FROM d_users WHERE name = 'rw' AND user_id % 2 = 0 RETURNING user_id;
SELECT count(*) FROM d_users;
COMMIT;

-- name: types_insert_select; tables: d_types
INSERT INTO d_types SELECT k + 100000, c_int2, c_int4, c_int8, c_numeric, c_float4, c_float8, c_text, c_varchar, c_char,
    c_bool, c_date, c_time, c_ts, c_tstz, c_interval, c_uuid, c_bytea, c_jsonb, c_json, c_int_arr, c_text_arr, c_inet,
    c_cidr, c_macaddr, c_bit, c_varbit, c_range, c_point
FROM alltypes WHERE k % 3 = 0 RETURNING *;

-- name: types_insert_literals; tables: d_types
INSERT INTO d_types VALUES
    (-100001, -32768, 2147483647, -9223372036854775808, 'NaN', '-Infinity', 'NaN', E'multi\nline\ttab\\', 'x', 'ab',
     false, '0001-01-01', '23:59:59.999999', '0001-01-01 00:00', '9999-12-31 23:59+00', '-1000000 days',
     '00000000-0000-0000-0000-000000000000',
     '\x', '{"deep": {"a": [1, 2, {"b": null}]}, "e": ""}', '{"keep":  "spacing"}', '{{1,NULL},{3,4}}',
     '{"with \"quote\"", "", NULL}', '255.255.255.255', '0.0.0.0/0', 'aa:bb:cc:dd:ee:ff', B'00000000', B'', '(,)',
     '(1e300,-1e-300)'),
    (-100002, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
RETURNING *;

-- name: types_update_every_type; tables: d_types
UPDATE d_types SET c_int2 = c_int2 / 2, c_int4 = c_int4 / 2, c_int8 = c_int8 / 3, c_numeric = c_numeric * 3,
    c_float4 = c_float4 / 3, c_float8 = c_float8 * 3, c_text = c_text || 'é', c_varchar = left(c_varchar, 3),
    c_char = 'zz', c_bool = NOT c_bool, c_date = c_date + 1, c_time = c_time + interval '1 minute',
    c_ts = c_ts + interval '1 hour', c_tstz = c_tstz - interval '1 day', c_interval = c_interval * 2,
    c_uuid = md5(k::text)::uuid, c_bytea = c_bytea || '\x01', c_jsonb = c_jsonb || '{"u": 1}',
    c_json = '{"u": 1}', c_int_arr = c_int_arr || c_int_arr, c_text_arr = array_append(c_text_arr, NULL),
    c_inet = c_inet + 1, c_macaddr = NULL, c_bit = ~c_bit, c_varbit = c_varbit || B'1', c_range = c_range * '[0,5)',
    c_point = c_point + point '(1,1)'
WHERE k % 4 = 1 AND k > 0 RETURNING *;

-- name: types_delete_by_predicates; tables: d_types
DELETE FROM d_types WHERE c_float8 = 'NaN' OR c_jsonb @> '{"a": 1}' OR c_bool IS NULL RETURNING k, c_float8, c_jsonb;

-- name: types_update_key; tables: d_types
UPDATE d_types SET k = -k WHERE k > 100000 AND k % 2 = 0 RETURNING k, c_text, c_jsonb;

-- name: global_types_insert_select; tables: g_types
INSERT INTO g_types SELECT * FROM alltypes WHERE k % 5 = 2 ON CONFLICT DO NOTHING RETURNING k;

-- name: global_types_update; tables: g_types
UPDATE g_types SET c_float8 = c_float8 * 2, c_numeric = c_numeric + 1, c_jsonb = c_jsonb || '[1]', c_text = NULL,
    c_tstz = c_tstz + interval '1 second', c_bytea = '\xff' || c_bytea
WHERE k % 3 <> 0 RETURNING k;

-- name: global_types_delete; tables: g_types
DELETE FROM g_types WHERE c_float4 = 'NaN' OR c_float8 = 'NaN' OR c_numeric = 'NaN' OR c_int4 < 0 RETURNING k;

-- name: global_types_update_key; tables: g_types
UPDATE g_types SET k = k + 1000000 WHERE k % 2 = 0 RETURNING k;

-- name: global_without_key_update_duplicates; tables: g_log
UPDATE g_log SET msg = 'changed' WHERE n = 3 RETURNING *;

-- name: global_without_key_delete_duplicates; tables: g_log
DELETE FROM g_log WHERE n IN (1, 2) OR n IS NULL RETURNING *;

-- name: global_without_key_insert_duplicates; tables: g_log
INSERT INTO g_log SELECT * FROM g_log WHERE n = 4 RETURNING *;
INSERT INTO g_log VALUES (NULL, NULL, NULL), (NULL, NULL, NULL);
UPDATE g_log SET at = at + interval '1 hour' WHERE n IS NULL OR msg IS NULL RETURNING *;

-- Values outside Python's datetime range, on tables of their own (edge is distributed, g_edge global):
-- a value that cannot be written must not leave other tables different.

-- name: edge_insert_each_value; tables: edge g_edge
INSERT INTO edge VALUES (1001, 'infinity', NULL, NULL, NULL, NULL), (1002, '-infinity', NULL, NULL, NULL, NULL),
    (1003, '0044-03-15 BC', NULL, NULL, NULL, NULL), (1004, '12000-01-01', NULL, NULL, NULL, NULL);
INSERT INTO edge VALUES (1005, NULL, '24:00:00', NULL, NULL, NULL);
INSERT INTO edge VALUES (1006, NULL, NULL, 'infinity', '-infinity', NULL), (1007, NULL, NULL, '0044-03-15 12:00 BC', NULL, NULL);
INSERT INTO edge VALUES (1008, NULL, NULL, NULL, NULL, '1 year 2 mons'), (1009, NULL, NULL, NULL, NULL, '1 mon -30 days'),
    (1010, NULL, NULL, NULL, NULL, '-178000000 years');
INSERT INTO g_edge SELECT * FROM edge WHERE k > 1000 RETURNING *;

-- name: edge_insert_select_all_rows; tables: edge g_edge
INSERT INTO edge SELECT k + 2000, d, t, ts, tz, i FROM edge WHERE k < 1000 RETURNING *;
INSERT INTO g_edge SELECT k + 2000, d, t, ts, tz, i FROM edge WHERE k < 1000 RETURNING *;

-- name: edge_update; tables: edge g_edge
UPDATE edge SET i = i + interval '1 mon', d = d + 1 WHERE k % 2 = 0 RETURNING *;
UPDATE g_edge SET i = i + interval '1 mon', d = d + 1 WHERE k % 2 = 0 RETURNING *;

-- name: edge_update_key_moves_rows; tables: edge
UPDATE edge SET k = k + 100000 WHERE k % 3 = 0 RETURNING *;
