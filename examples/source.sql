-- The sandbox's data source: a small shop. Connections read it through
-- postgres_fdw as the role "reader".
CREATE TABLE IF NOT EXISTS customers (id int PRIMARY KEY, name text NOT NULL, country text);
CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, customer_id int REFERENCES customers, amount numeric, placed_at date);
CREATE SCHEMA IF NOT EXISTS warehouse;
CREATE TABLE IF NOT EXISTS warehouse.stock (sku text PRIMARY KEY, quantity int);
CREATE TABLE IF NOT EXISTS warehouse.locations (code text PRIMARY KEY, city text);

INSERT INTO customers VALUES (1, 'Ada', 'UK'), (2, 'Grace', 'US'), (3, 'Edsger', 'NL') ON CONFLICT DO NOTHING;
INSERT INTO orders VALUES (1, 1, 120.00, '2026-11-01'), (2, 2, 75.50, '2026-11-02'), (3, 1, 12.25, '2026-11-03')
  ON CONFLICT DO NOTHING;
-- The European shop: the same orders, and a currency.
CREATE SCHEMA IF NOT EXISTS eu;
CREATE TABLE IF NOT EXISTS eu.customers (id int PRIMARY KEY, name text NOT NULL, country text);
CREATE TABLE IF NOT EXISTS eu.orders (id int PRIMARY KEY, customer_id int REFERENCES eu.customers, amount numeric, placed_at date, currency text);
INSERT INTO eu.customers VALUES (1, 'Margaret', 'DE'), (2, 'Barbara', 'FR') ON CONFLICT DO NOTHING;
INSERT INTO eu.orders VALUES (1, 1, 99.00, '2026-11-04', 'EUR'), (2, 2, 18.50, '2026-11-05', 'EUR') ON CONFLICT DO NOTHING;

INSERT INTO warehouse.stock VALUES ('KB-01', 40), ('MS-02', 12) ON CONFLICT DO NOTHING;
INSERT INTO warehouse.locations VALUES ('AMS', 'Amsterdam'), ('LON', 'London') ON CONFLICT DO NOTHING;

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reader') THEN
    CREATE ROLE reader LOGIN PASSWORD 'reader-sandbox-password';
  END IF;
END $$;
GRANT USAGE ON SCHEMA public, warehouse, eu TO reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public, warehouse, eu TO reader;
