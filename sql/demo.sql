-- make demo: a small shop, sharded.  Run on one node; every statement reaches the others.
\set ON_ERROR_STOP on
DROP TABLE IF EXISTS orders, users;
DROP TABLE IF EXISTS products;

-- users and their orders, distributed by user and co-located: a user's orders live with the user
CREATE TABLE users (
    user_id   bigint PRIMARY KEY,
    name      text NOT NULL,
    country   text NOT NULL,
    signed_up date NOT NULL
) WITH (distributed_by = 'user_id', num_parts = 6);

-- the catalogue: a full copy on every node, joined locally
CREATE TABLE products (sku text PRIMARY KEY, title text NOT NULL, price numeric(10,2) NOT NULL) WITH (global);

-- foreign keys hold on every node: an order's user is in the partition of the same number, on
-- the same node, and every node has the catalogue
CREATE TABLE orders (
    order_id   bigserial,
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    sku        text NOT NULL REFERENCES products,
    qty        int NOT NULL CHECK (qty > 0),
    ordered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, order_id)
) WITH (distributed_by = 'user_id', colocate_with = 'users');

COPY products FROM STDIN (FORMAT csv);
kb-01,Keyboard,49.90
ms-02,Mouse,19.50
mn-27,27-inch monitor,279.00
hd-05,Headset,89.00
cb-10,USB-C cable,9.99
\.

COPY users FROM STDIN (FORMAT csv);
1,Ada,UK,2024-01-05
2,Linus,FI,2024-01-09
3,Grace,US,2024-02-11
4,Edsger,NL,2024-02-17
5,Barbara,US,2024-03-02
6,Donald,US,2024-03-15
7,Frances,US,2024-04-01
8,Niklaus,CH,2024-04-20
9,Margaret,US,2024-05-08
10,Tim,UK,2024-05-30
11,Sophie,UK,2024-06-12
12,Guido,NL,2024-07-04
\.

-- 6000 orders, routed by PostgreSQL's own hash partitioning to the node holding each user
INSERT INTO orders (user_id, sku, qty, ordered_at)
SELECT 1 + (g * 7) % 12, (ARRAY['kb-01', 'ms-02', 'mn-27', 'hd-05', 'cb-10'])[1 + g % 5], 1 + g % 3,
       timestamptz '2024-06-01' + g * interval '37 minutes'
  FROM generate_series(1, 6000) g;

SELECT table_name, node, count(*) AS partitions
  FROM shoal.partitions GROUP BY 1, 2 ORDER BY 1, 2;
