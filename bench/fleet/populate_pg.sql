-- Fills an initialized heex-cloud PostgreSQL store with :n devices, the same fleet
-- populate.py writes into SQLite (names robot-0000000…, site=site-00..site-99 1% each,
-- retired=yes on 1 device in 100, 1 in 10 never seen), all enrolled with the owner's first
-- key, in one transaction. Usage:
--   psql "$URL" -v n=1000000 -v domain=heex.local -f bench/fleet/populate_pg.sql
\set ON_ERROR_STOP on
BEGIN;
CREATE TEMP TABLE first_key ON COMMIT DROP AS
    SELECT workspace_id, id AS key_id, member_id FROM api_keys ORDER BY created_at LIMIT 1;
CREATE TEMP TABLE fleet ON COMMIT DROP AS
    SELECT i,
           'dev_' || substr(md5(i::text), 1, 20) AS id,
           'site-' || lpad((i % 100)::text, 2, '0') AS site,
           i % 100 = 7 AS retired,
           extract(epoch FROM now())::bigint AS now
    FROM generate_series(0, :n - 1) AS i;
INSERT INTO devices (id, workspace_id, name, labels, facts, spiffe_id, enrolled_at,
                     enrolled_by_key, enrolled_by_member, cert_serial, cert_expires_at,
                     last_seen_at, agent_version)
SELECT f.id, k.workspace_id, 'robot-' || lpad(f.i::text, 7, '0'),
       CASE WHEN f.retired
            THEN json_build_object('retired', 'yes', 'site', f.site)::text
            ELSE json_build_object('site', f.site)::text END,
       '{"hostname":"robot","os":"Debian GNU/Linux 12","arch":"x86_64","cpus":4}',
       'spiffe://' || :'domain' || '/ws/' || k.workspace_id || '/device/' || f.id,
       f.now - :n + f.i, k.key_id, k.member_id, lpad(to_hex(f.i), 32, '0'),
       f.now + (random() * 30 * 86400)::bigint,
       CASE WHEN f.i % 10 = 0 THEN NULL ELSE f.now - (random() * 30 * 86400)::bigint END,
       '0.1.0'
FROM fleet f, first_key k;
INSERT INTO device_labels (device_id, workspace_id, enrolled_at, key, value)
SELECT d.id, d.workspace_id, d.enrolled_at, 'site', f.site
FROM fleet f JOIN devices d ON d.id = f.id;
INSERT INTO device_labels (device_id, workspace_id, enrolled_at, key, value)
SELECT d.id, d.workspace_id, d.enrolled_at, 'retired', 'yes'
FROM fleet f JOIN devices d ON d.id = f.id WHERE f.retired;
UPDATE api_keys SET uses = uses + :n WHERE id = (SELECT key_id FROM first_key);
COMMIT;
VACUUM ANALYZE;
