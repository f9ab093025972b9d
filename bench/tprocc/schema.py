"""The nine TPROC-C tables with the column sets and types of HammerDB's PostgreSQL schema, their keys,
and how each is sharded: every table but item by its warehouse id, item global."""

from __future__ import annotations

# name -> columns (HammerDB's order: fixed-width columns first) and primary key
TABLES: dict[str, tuple[str, str]] = {
    "warehouse": ("""w_id integer NOT NULL, w_name varchar(10) NOT NULL, w_street_1 varchar(20) NOT NULL,
        w_street_2 varchar(20) NOT NULL, w_city varchar(20) NOT NULL, w_state char(2) NOT NULL,
        w_zip char(9) NOT NULL, w_tax numeric(4,4) NOT NULL, w_ytd numeric(16,2) NOT NULL""", "w_id"),
    "district": ("""d_w_id integer NOT NULL, d_next_o_id integer NOT NULL, d_id smallint NOT NULL,
        d_ytd numeric(12,2) NOT NULL, d_tax numeric(4,4) NOT NULL, d_name varchar(10) NOT NULL,
        d_street_1 varchar(20) NOT NULL, d_street_2 varchar(20) NOT NULL, d_city varchar(20) NOT NULL,
        d_state char(2) NOT NULL, d_zip char(9) NOT NULL""", "d_w_id, d_id"),
    "customer": ("""c_since timestamptz NOT NULL, c_id integer NOT NULL, c_w_id integer NOT NULL,
        c_d_id smallint NOT NULL, c_payment_cnt smallint NOT NULL, c_delivery_cnt smallint NOT NULL,
        c_first varchar(16) NOT NULL, c_middle char(2) NOT NULL, c_last varchar(16) NOT NULL,
        c_street_1 varchar(20) NOT NULL, c_street_2 varchar(20) NOT NULL, c_city varchar(20) NOT NULL,
        c_state char(2) NOT NULL, c_zip char(9) NOT NULL, c_phone char(16) NOT NULL,
        c_credit char(2) NOT NULL, c_credit_lim numeric(12,2) NOT NULL, c_discount numeric(4,4) NOT NULL,
        c_balance numeric(12,2) NOT NULL, c_ytd_payment numeric(12,2) NOT NULL,
        c_data varchar(500) NOT NULL""", "c_w_id, c_d_id, c_id"),
    "history": ("""h_date timestamptz NOT NULL, h_c_id integer, h_c_w_id integer NOT NULL,
        h_w_id integer NOT NULL, h_c_d_id smallint NOT NULL, h_d_id smallint NOT NULL,
        h_amount numeric(6,2) NOT NULL, h_data varchar(24) NOT NULL""", ""),
    "new_order": ("""no_w_id integer NOT NULL, no_o_id integer NOT NULL, no_d_id smallint NOT NULL""",
                  "no_w_id, no_d_id, no_o_id"),
    "orders": ("""o_entry_d timestamptz NOT NULL, o_id integer NOT NULL, o_w_id integer NOT NULL,
        o_c_id integer NOT NULL, o_d_id smallint NOT NULL, o_carrier_id smallint,
        o_ol_cnt smallint NOT NULL, o_all_local smallint NOT NULL""", "o_w_id, o_d_id, o_id"),
    "order_line": ("""ol_delivery_d timestamptz, ol_o_id integer NOT NULL, ol_w_id integer NOT NULL,
        ol_i_id integer NOT NULL, ol_supply_w_id integer NOT NULL, ol_d_id smallint NOT NULL,
        ol_number smallint NOT NULL, ol_quantity smallint NOT NULL, ol_amount numeric(6,2),
        ol_dist_info char(24)""", "ol_w_id, ol_d_id, ol_o_id, ol_number"),
    "stock": ("""s_i_id integer NOT NULL, s_w_id integer NOT NULL, s_ytd integer NOT NULL,
        s_quantity smallint NOT NULL, s_order_cnt smallint NOT NULL, s_remote_cnt smallint NOT NULL,
        s_dist_01 char(24) NOT NULL, s_dist_02 char(24) NOT NULL, s_dist_03 char(24) NOT NULL,
        s_dist_04 char(24) NOT NULL, s_dist_05 char(24) NOT NULL, s_dist_06 char(24) NOT NULL,
        s_dist_07 char(24) NOT NULL, s_dist_08 char(24) NOT NULL, s_dist_09 char(24) NOT NULL,
        s_dist_10 char(24) NOT NULL, s_data varchar(50) NOT NULL""", "s_i_id, s_w_id"),
    "item": ("""i_id integer NOT NULL, i_im_id integer NOT NULL, i_name varchar(24) NOT NULL,
        i_price numeric(5,2) NOT NULL, i_data varchar(50) NOT NULL""", "i_id"),
}

# HammerDB's two secondary indexes (customer by last name, orders by customer), built after the load.
INDEXES = (
    "CREATE UNIQUE INDEX customer_i2 ON customer USING btree (c_w_id, c_d_id, c_last, c_first, c_id)",
    "CREATE UNIQUE INDEX orders_i2 ON orders USING btree (o_w_id, o_d_id, o_c_id, o_id)",
)

# table -> its warehouse column; all are colocated with warehouse (same key type, same modulus)
SHARD_KEYS: dict[str, str] = {
    "warehouse": "w_id", "district": "d_w_id", "customer": "c_w_id", "history": "h_w_id",
    "new_order": "no_w_id", "orders": "o_w_id", "order_line": "ol_w_id", "stock": "s_w_id",
}
GLOBAL_TABLES = ("item",)


def create_statements() -> list[str]:
    """DROP and CREATE TABLE statements for the nine tables (plain tables, primary keys included)."""
    out = []
    for name, (columns, key) in TABLES.items():
        out.append(f"DROP TABLE IF EXISTS {name} CASCADE")
        pk = f", CONSTRAINT {name}_i1 PRIMARY KEY ({key})" if key else ""
        out.append(f"CREATE TABLE {name} ({' '.join(columns.split())}{pk})")
    return out
