-- The differential suite's schema (tests/test_differential.py).
--
-- Plain PostgreSQL runs this file as it is. The shoal cluster runs it on one node with every
-- /*SHOAL ... SHOAL*/ marker turned into live SQL, so there the tables are distributed or global.
-- Data is loaded in between two phases: the statements after the "phase: after-load" line run once the
-- rows are in (orders is distributed only then, so create_distributed_table moves existing rows).

-- Read-only tables: the queries of queries.sql run on them.

CREATE TABLE users (
    user_id   int8 PRIMARY KEY,
    name      text NOT NULL,
    email     varchar(80),
    country   char(2),
    signup    date,
    score     numeric(10, 2),
    active    bool,
    tags      text[]
) /*SHOAL WITH (distributed_by = 'user_id', num_parts = 6) SHOAL*/;

CREATE TABLE orders (
    user_id    int8 NOT NULL,
    order_id   int8 NOT NULL,
    product_id int4,
    qty        int2,
    amount     numeric(12, 2),
    status     text,
    ordered_at timestamptz,
    note       text,
    PRIMARY KEY (user_id, order_id)
);

CREATE TABLE products (
    product_id int4 PRIMARY KEY,
    name       text NOT NULL,
    category   text,
    price      numeric(8, 2),
    weight     float8
) /*SHOAL WITH (global) SHOAL*/;

CREATE TABLE countries (
    code  char(2) PRIMARY KEY,
    name  text NOT NULL,
    vat   numeric(4, 2)
);
/*SHOAL SELECT shoal.create_global_table('countries') SHOAL*/;

-- every common type, distributed by an int8 key
CREATE TABLE alltypes (
    k          int8 PRIMARY KEY,
    c_int2     int2,
    c_int4     int4,
    c_int8     int8,
    c_numeric  numeric,
    c_float4   float4,
    c_float8   float8,
    c_text     text,
    c_varchar  varchar(20),
    c_char     char(5),
    c_bool     bool,
    c_date     date,
    c_time     time,
    c_ts       timestamp,
    c_tstz     timestamptz,
    c_interval interval,
    c_uuid     uuid,
    c_bytea    bytea,
    c_jsonb    jsonb,
    c_json     json,
    c_int_arr  int4[],
    c_text_arr text[],
    c_inet     inet,
    c_cidr     cidr,
    c_macaddr  macaddr,
    c_bit      bit(8),
    c_varbit   varbit,
    c_range    int4range,
    c_point    point
) /*SHOAL WITH (distributed_by = 'k', num_parts = 5) SHOAL*/;

-- distributed by a text key
CREATE TABLE tags (
    tag        text PRIMARY KEY,
    uses       int4,
    first_seen timestamptz
);
/*SHOAL SELECT shoal.create_distributed_table('tags', 'tag', 4) SHOAL*/;

-- Tables the DML tests change (so that the read-only tables keep their rows).

CREATE TABLE d_users (
    user_id int8 PRIMARY KEY,
    name    text NOT NULL,
    email   varchar(80),
    country char(2),
    score   numeric(10, 2) DEFAULT 0,
    active  bool DEFAULT true
) /*SHOAL WITH (distributed_by = 'user_id', num_parts = 6) SHOAL*/;

CREATE TABLE d_orders (
    user_id    int8 NOT NULL,
    order_id   int8 NOT NULL,
    product_id int4,
    qty        int2,
    amount     numeric(12, 2),
    status     text DEFAULT 'new',
    ordered_at timestamptz,
    PRIMARY KEY (user_id, order_id)
) /*SHOAL WITH (distributed_by = 'user_id', num_parts = 6, colocate_with = 'd_users') SHOAL*/;

CREATE TABLE d_products (
    product_id int4 PRIMARY KEY,
    name       text NOT NULL,
    price      numeric(8, 2)
) /*SHOAL WITH (global) SHOAL*/;

CREATE TABLE d_types (
    k          int8 PRIMARY KEY,
    c_int2     int2,
    c_int4     int4,
    c_int8     int8,
    c_numeric  numeric,
    c_float4   float4,
    c_float8   float8,
    c_text     text,
    c_varchar  varchar(20),
    c_char     char(5),
    c_bool     bool,
    c_date     date,
    c_time     time,
    c_ts       timestamp,
    c_tstz     timestamptz,
    c_interval interval,
    c_uuid     uuid,
    c_bytea    bytea,
    c_jsonb    jsonb,
    c_json     json,
    c_int_arr  int4[],
    c_text_arr text[],
    c_inet     inet,
    c_cidr     cidr,
    c_macaddr  macaddr,
    c_bit      bit(8),
    c_varbit   varbit,
    c_range    int4range,
    c_point    point
) /*SHOAL WITH (distributed_by = 'k', num_parts = 6) SHOAL*/;

-- a global table with every type
CREATE TABLE g_types (
    k          int8 PRIMARY KEY,
    c_int2     int2,
    c_int4     int4,
    c_int8     int8,
    c_numeric  numeric,
    c_float4   float4,
    c_float8   float8,
    c_text     text,
    c_varchar  varchar(20),
    c_char     char(5),
    c_bool     bool,
    c_date     date,
    c_time     time,
    c_ts       timestamp,
    c_tstz     timestamptz,
    c_interval interval,
    c_uuid     uuid,
    c_bytea    bytea,
    c_jsonb    jsonb,
    c_json     json,
    c_int_arr  int4[],
    c_text_arr text[],
    c_inet     inet,
    c_cidr     cidr,
    c_macaddr  macaddr,
    c_bit      bit(8),
    c_varbit   varbit,
    c_range    int4range,
    c_point    point
) /*SHOAL WITH (global) SHOAL*/;

-- a global table without a primary key, with duplicate rows
CREATE TABLE g_log (n int4, msg text, at timestamptz) /*SHOAL WITH (global) SHOAL*/;

-- dates, times and intervals at the edges of what PostgreSQL stores
CREATE TABLE edge (k int8 PRIMARY KEY, d date, t time, ts timestamp, tz timestamptz, i interval)
    /*SHOAL WITH (distributed_by = 'k', num_parts = 3) SHOAL*/;
CREATE TABLE g_edge (k int8 PRIMARY KEY, d date, t time, ts timestamp, tz timestamptz, i interval)
    /*SHOAL WITH (global) SHOAL*/;

-- phase: after-load

/*SHOAL SELECT shoal.create_distributed_table('orders', 'user_id', colocate_with => 'users') SHOAL*/;
CREATE INDEX orders_product_idx ON orders (product_id);
ANALYZE;
