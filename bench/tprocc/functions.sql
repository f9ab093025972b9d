-- TPROC-C's five transactions as PL/pgSQL functions: one call is one transaction, as HammerDB drives
-- PostgreSQL (its "functions" mode: SELECT neword(...) and so on).  Written for bench/tprocc; the
-- statements follow the TPC-C profiles and HammerDB's choices (random item lines generated inside
-- neword, customers chosen by last name at position ceil(n/2) ordered by c_first, etc.), written so that
-- every statement on a sharded table names its warehouse id: each one reaches a single shard.
--
-- Errors: the 1% of new orders with an unused item raise SQLSTATE TP001 (the order is rolled back, as
-- the TPC-C specification asks); serialization failures and deadlocks are left to the caller, which
-- counts them.

CREATE OR REPLACE FUNCTION neword(p_w_id integer, p_max_w_id integer, p_d_id integer, p_c_id integer,
                                  p_ol_cnt integer)
RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    v_discount  numeric(4,4);
    v_last      varchar(16);
    v_credit    char(2);
    v_w_tax     numeric(4,4);
    v_d_tax     numeric(4,4);
    v_o_id      integer;
    v_all_local smallint := 1;
    v_invalid   boolean := random() < 0.01;
    v_items     integer[] := '{}';
    v_supply    integer[] := '{}';
    v_qty       smallint[] := '{}';
    v_amounts   numeric(6,2)[] := '{}';
    v_dists     char(24)[] := '{}';
    v_item      integer;
    v_sw        integer;
    v_price     numeric(5,2);
    v_dist      char(24);
    v_total     numeric := 0;
BEGIN
    -- The order lines: distinct items (an item twice in one order would update its stock row twice),
    -- 1% of them from another warehouse, and for 1% of the orders an unused item on the last line.
    FOR n IN 1 .. p_ol_cnt LOOP
        IF v_invalid AND n = p_ol_cnt THEN
            v_item := 100001;
        ELSE
            LOOP
                v_item := 1 + floor(random() * 100000)::integer;
                EXIT WHEN NOT v_item = ANY (v_items);
            END LOOP;
        END IF;
        v_sw := p_w_id;
        IF p_max_w_id > 1 AND random() < 0.01 THEN
            v_sw := 1 + (p_w_id + floor(random() * (p_max_w_id - 1))::integer) % p_max_w_id;
            v_all_local := 0;
        END IF;
        v_items := v_items || v_item;
        v_supply := v_supply || v_sw;
        v_qty := v_qty || (1 + floor(random() * 10))::smallint;
    END LOOP;
    -- Stock rows are locked in (warehouse, item) order, so that concurrent orders do not deadlock.
    SELECT array_agg(i ORDER BY w, i), array_agg(w ORDER BY w, i), array_agg(q ORDER BY w, i)
      INTO v_items, v_supply, v_qty
      FROM unnest(v_items, v_supply, v_qty) AS l(i, w, q);

    SELECT c_discount, c_last, c_credit, w_tax INTO STRICT v_discount, v_last, v_credit, v_w_tax
      FROM customer, warehouse
     WHERE w_id = p_w_id AND c_w_id = p_w_id AND c_d_id = p_d_id AND c_id = p_c_id;

    UPDATE district SET d_next_o_id = d_next_o_id + 1
     WHERE d_w_id = p_w_id AND d_id = p_d_id
    RETURNING d_next_o_id - 1, d_tax INTO STRICT v_o_id, v_d_tax;

    INSERT INTO orders (o_id, o_d_id, o_w_id, o_c_id, o_entry_d, o_ol_cnt, o_all_local)
    VALUES (v_o_id, p_d_id, p_w_id, p_c_id, now(), p_ol_cnt, v_all_local);
    INSERT INTO new_order (no_o_id, no_d_id, no_w_id) VALUES (v_o_id, p_d_id, p_w_id);

    FOR n IN 1 .. p_ol_cnt LOOP
        SELECT i_price INTO v_price FROM item WHERE i_id = v_items[n];
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tprocc: item % does not exist: new order rolled back', v_items[n]
                  USING ERRCODE = 'TP001';
        END IF;
        UPDATE stock
           SET s_quantity = CASE WHEN s_quantity >= v_qty[n] + 10 THEN s_quantity - v_qty[n]
                                 ELSE s_quantity - v_qty[n] + 91 END,
               s_ytd = s_ytd + v_qty[n],
               s_order_cnt = s_order_cnt + 1,
               s_remote_cnt = s_remote_cnt + CASE WHEN v_supply[n] <> p_w_id THEN 1 ELSE 0 END
         WHERE s_i_id = v_items[n] AND s_w_id = v_supply[n]
        RETURNING CASE p_d_id WHEN 1 THEN s_dist_01 WHEN 2 THEN s_dist_02 WHEN 3 THEN s_dist_03
                              WHEN 4 THEN s_dist_04 WHEN 5 THEN s_dist_05 WHEN 6 THEN s_dist_06
                              WHEN 7 THEN s_dist_07 WHEN 8 THEN s_dist_08 WHEN 9 THEN s_dist_09
                              ELSE s_dist_10 END
          INTO STRICT v_dist;
        v_amounts := v_amounts || (v_qty[n] * v_price * (1 + v_w_tax + v_d_tax) * (1 - v_discount))::numeric(6,2);
        v_dists := v_dists || v_dist;
        v_total := v_total + v_amounts[n];
    END LOOP;

    INSERT INTO order_line (ol_o_id, ol_d_id, ol_w_id, ol_number, ol_i_id, ol_supply_w_id, ol_quantity,
                            ol_amount, ol_dist_info)
    SELECT v_o_id, p_d_id, p_w_id, l.n, l.i, l.w, l.q, l.a, l.d
      FROM unnest(v_items, v_supply, v_qty, v_amounts, v_dists) WITH ORDINALITY AS l(i, w, q, a, d, n);
    RETURN v_total;
END;
$$;

CREATE OR REPLACE FUNCTION payment(p_w_id integer, p_d_id integer, p_c_w_id integer, p_c_d_id integer,
                                   p_c_id integer, p_byname integer, p_h_amount numeric, p_c_last varchar)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_w_name  varchar(10);
    v_d_name  varchar(10);
    v_c_id    integer := p_c_id;
    v_count   integer;
    v_balance numeric(12,2);
BEGIN
    UPDATE warehouse SET w_ytd = w_ytd + p_h_amount WHERE w_id = p_w_id
    RETURNING w_name INTO STRICT v_w_name;
    UPDATE district SET d_ytd = d_ytd + p_h_amount WHERE d_w_id = p_w_id AND d_id = p_d_id
    RETURNING d_name INTO STRICT v_d_name;

    IF p_byname = 1 THEN
        SELECT count(*) INTO v_count FROM customer
         WHERE c_w_id = p_c_w_id AND c_d_id = p_c_d_id AND c_last = p_c_last;
        SELECT c_id INTO STRICT v_c_id FROM customer
         WHERE c_w_id = p_c_w_id AND c_d_id = p_c_d_id AND c_last = p_c_last
         ORDER BY c_first OFFSET (v_count - 1) / 2 LIMIT 1;
    END IF;

    -- Bad-credit customers get the payment prepended to c_data (kept to 500 characters).
    UPDATE customer
       SET c_balance = c_balance - p_h_amount,
           c_ytd_payment = c_ytd_payment + p_h_amount,
           c_payment_cnt = c_payment_cnt + 1,
           c_data = CASE WHEN c_credit = 'BC'
                         THEN substr(format('%s %s %s %s %s %s | ', v_c_id, p_c_d_id, p_c_w_id, p_d_id,
                                            p_w_id, p_h_amount) || c_data, 1, 500)
                         ELSE c_data END
     WHERE c_w_id = p_c_w_id AND c_d_id = p_c_d_id AND c_id = v_c_id
    RETURNING c_balance INTO STRICT v_balance;

    INSERT INTO history (h_c_d_id, h_c_w_id, h_c_id, h_d_id, h_w_id, h_date, h_amount, h_data)
    VALUES (p_c_d_id, p_c_w_id, v_c_id, p_d_id, p_w_id, now(), p_h_amount, v_w_name || '    ' || v_d_name);
    RETURN v_c_id;
END;
$$;

CREATE OR REPLACE FUNCTION ostat(p_w_id integer, p_d_id integer, p_c_id integer, p_byname integer,
                                 p_c_last varchar)
RETURNS TABLE (r_ol_i_id integer, r_ol_supply_w_id integer, r_ol_quantity smallint, r_ol_amount numeric,
               r_ol_delivery_d timestamptz, r_c_id integer, r_c_last varchar, r_c_first varchar,
               r_c_middle char(2), r_c_balance numeric, r_o_id integer, r_o_entry_d timestamptz,
               r_o_carrier_id smallint)
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    r_c_id := p_c_id;
    IF p_byname = 1 THEN
        SELECT count(*) INTO v_count FROM customer
         WHERE c_w_id = p_w_id AND c_d_id = p_d_id AND c_last = p_c_last;
        SELECT c_id INTO STRICT r_c_id FROM customer
         WHERE c_w_id = p_w_id AND c_d_id = p_d_id AND c_last = p_c_last
         ORDER BY c_first OFFSET (v_count - 1) / 2 LIMIT 1;
    END IF;
    SELECT c_balance, c_first, c_middle, c_last INTO STRICT r_c_balance, r_c_first, r_c_middle, r_c_last
      FROM customer WHERE c_w_id = p_w_id AND c_d_id = p_d_id AND c_id = r_c_id;
    SELECT o_id, o_entry_d, o_carrier_id INTO r_o_id, r_o_entry_d, r_o_carrier_id
      FROM orders WHERE o_w_id = p_w_id AND o_d_id = p_d_id AND o_c_id = r_c_id
     ORDER BY o_id DESC LIMIT 1;
    RETURN QUERY
        SELECT ol_i_id, ol_supply_w_id, ol_quantity, ol_amount::numeric, ol_delivery_d, r_c_id, r_c_last,
               r_c_first, r_c_middle, r_c_balance, r_o_id, r_o_entry_d, r_o_carrier_id
          FROM order_line WHERE ol_w_id = p_w_id AND ol_d_id = p_d_id AND ol_o_id = r_o_id;
END;
$$;

CREATE OR REPLACE FUNCTION delivery(p_w_id integer, p_carrier_id integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_o_id      integer;
    v_c_id      integer;
    v_total     numeric;
    v_delivered integer := 0;
BEGIN
    FOR d IN 1 .. 10 LOOP
        SELECT min(no_o_id) INTO v_o_id FROM new_order WHERE no_w_id = p_w_id AND no_d_id = d;
        CONTINUE WHEN v_o_id IS NULL;
        DELETE FROM new_order WHERE no_w_id = p_w_id AND no_d_id = d AND no_o_id = v_o_id;
        CONTINUE WHEN NOT FOUND;  -- a concurrent delivery took it: skip this district
        UPDATE orders SET o_carrier_id = p_carrier_id
         WHERE o_w_id = p_w_id AND o_d_id = d AND o_id = v_o_id
        RETURNING o_c_id INTO STRICT v_c_id;
        UPDATE order_line SET ol_delivery_d = now()
         WHERE ol_w_id = p_w_id AND ol_d_id = d AND ol_o_id = v_o_id;
        SELECT sum(ol_amount) INTO v_total FROM order_line
         WHERE ol_w_id = p_w_id AND ol_d_id = d AND ol_o_id = v_o_id;
        UPDATE customer SET c_balance = c_balance + coalesce(v_total, 0),
                            c_delivery_cnt = c_delivery_cnt + 1
         WHERE c_w_id = p_w_id AND c_d_id = d AND c_id = v_c_id;
        v_delivered := v_delivered + 1;
    END LOOP;
    RETURN v_delivered;
END;
$$;

CREATE OR REPLACE FUNCTION slev(p_w_id integer, p_d_id integer, p_threshold integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_next  integer;
    v_count integer;
BEGIN
    SELECT d_next_o_id INTO STRICT v_next FROM district WHERE d_w_id = p_w_id AND d_id = p_d_id;
    SELECT count(DISTINCT s_i_id) INTO v_count
      FROM order_line, stock
     WHERE ol_w_id = p_w_id AND ol_d_id = p_d_id AND ol_o_id < v_next AND ol_o_id >= v_next - 20
       AND s_w_id = p_w_id AND s_i_id = ol_i_id AND s_quantity < p_threshold;
    RETURN v_count;
END;
$$;
