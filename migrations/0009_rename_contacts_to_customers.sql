-- Refactor: "contacts" become "customers", everywhere.
--
-- A plain ALTER TABLE ... RENAME leaves every dependent name behind (the
-- identity sequence, constraints, indexes, triggers, referencing columns, the
-- audit function's body, the view). This migration renames all of them so that
-- the result is exactly the schema one would get had the table been called
-- crm.customers from the start; rehearse it on a production clone
-- (`cargo xtask db ...`) before deploying.
--
-- Locks: every statement takes an ACCESS EXCLUSIVE lock on its table, but all
-- are catalog-only changes (no table rewrite) except the UPDATE of
-- audit.events, which touches only the contact events.

-- The view depends on the columns renamed below: drop it, recreate it at the end.
DROP VIEW crm.contact_overview;

-- The table and everything named after it.
ALTER TABLE crm.contacts RENAME TO customers;
ALTER SEQUENCE crm.contacts_id_seq RENAME TO customers_id_seq;

ALTER TABLE crm.customers RENAME CONSTRAINT contacts_pkey TO customers_pkey;
ALTER TABLE crm.customers RENAME CONSTRAINT contacts_organization_id_fkey TO customers_organization_id_fkey;
ALTER TABLE crm.customers RENAME CONSTRAINT contacts_owner_staff_id_fkey TO customers_owner_staff_id_fkey;
ALTER TABLE crm.customers RENAME CONSTRAINT contacts_lifecycle_stage_check TO customers_lifecycle_stage_check;
ALTER TABLE crm.customers RENAME CONSTRAINT contacts_date_of_birth_check TO customers_date_of_birth_check;
ALTER TABLE crm.customers RENAME CONSTRAINT contacts_first_name_present TO customers_first_name_present;

ALTER INDEX crm.contacts_organization_id_lower_email_key RENAME TO customers_organization_id_lower_email_key;
ALTER INDEX crm.contacts_organization_id_name_idx RENAME TO customers_organization_id_name_idx;
ALTER INDEX crm.contacts_phone_idx RENAME TO customers_phone_idx;
ALTER INDEX crm.contacts_owner_staff_id_idx RENAME TO customers_owner_staff_id_idx;

ALTER TRIGGER contacts_touch_updated_at ON crm.customers RENAME TO customers_touch_updated_at;
ALTER TRIGGER contacts_audit ON crm.customers RENAME TO customers_audit;

-- Referencing columns, their foreign keys and indexes.
ALTER TABLE crm.conversations RENAME COLUMN contact_id TO customer_id;
ALTER TABLE crm.conversations RENAME CONSTRAINT conversations_contact_id_fkey TO conversations_customer_id_fkey;
ALTER INDEX crm.conversations_contact_id_idx RENAME TO conversations_customer_id_idx;

ALTER TABLE crm.tasks RENAME COLUMN contact_id TO customer_id;
ALTER TABLE crm.tasks RENAME CONSTRAINT tasks_contact_id_fkey TO tasks_customer_id_fkey;
ALTER INDEX crm.tasks_contact_id_idx RENAME TO tasks_customer_id_idx;

ALTER TABLE crm.calls RENAME COLUMN contact_id TO customer_id;
ALTER TABLE crm.calls RENAME CONSTRAINT calls_contact_id_fkey TO calls_customer_id_fkey;
ALTER INDEX crm.calls_contact_id_idx RENAME TO calls_customer_id_idx;

-- PostgreSQL 18+ names NOT NULL constraints too (<table>_<column>_not_null) and
-- does not rename them with their table or column. Give those of the tables
-- touched here their default names back (a no-op before PostgreSQL 18).
DO $$
DECLARE
    nn record;
BEGIN
    FOR nn IN
        SELECT c.conrelid::regclass AS tbl,
               c.conname,
               format('%s_%s_not_null', t.relname, a.attname) AS wanted
          FROM pg_constraint c
          JOIN pg_class t ON t.oid = c.conrelid
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
         WHERE c.contype = 'n'
           AND t.relnamespace = 'crm'::regnamespace
           AND t.relname IN ('customers', 'conversations', 'tasks', 'calls')
           AND c.conname <> format('%s_%s_not_null', t.relname, a.attname)
    LOOP
        EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', nn.tbl, nn.conname, nn.wanted);
    END LOOP;
END;
$$;

-- The audit trigger function names the table in its body: rename and rewrite it.
ALTER FUNCTION audit.record_contact_change() RENAME TO record_customer_change;
CREATE OR REPLACE FUNCTION audit.record_customer_change() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    old_image jsonb;
    new_image jsonb;
    diff      jsonb;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_image := to_jsonb(OLD);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_image := to_jsonb(NEW);
    END IF;

    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(n.key, jsonb_build_object('old', o.value, 'new', n.value))
          INTO diff
          FROM jsonb_each(new_image) AS n
          JOIN jsonb_each(old_image) AS o ON o.key = n.key
         WHERE n.value IS DISTINCT FROM o.value
           AND n.key <> 'updated_at';
        IF diff IS NULL THEN
            RETURN NULL;  -- nothing but updated_at changed: not worth an event
        END IF;
    END IF;

    INSERT INTO audit.events (table_name, row_id, organization_id, operation, old_row, new_row, changes)
    VALUES ('crm.customers',
            (COALESCE(new_image, old_image) ->> 'id')::bigint,
            (COALESCE(new_image, old_image) ->> 'organization_id')::bigint,
            TG_OP::audit.operation,
            old_image,
            new_image,
            diff);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION audit.record_customer_change() IS 'AFTER trigger on crm.customers: appends the change to audit.events.';

-- Past events follow the table, so a customer's history stays in one place.
UPDATE audit.events SET table_name = 'crm.customers' WHERE table_name = 'crm.contacts';

-- The view, under its new name.
CREATE VIEW crm.customer_overview AS
SELECT c.id AS customer_id,
       c.organization_id,
       concat_ws(' ', c.first_name, NULLIF(c.last_name, '')) AS full_name,
       c.email,
       c.phone,
       c.lifecycle_stage,
       s.full_name AS owner_name,
       (SELECT count(*)
          FROM crm.tasks t
         WHERE t.customer_id = c.id
           AND t.status IN ('open', 'in_progress')) AS open_task_count,
       (SELECT max(m.sent_at)
          FROM crm.conversations cv
          JOIN crm.messages m ON m.conversation_id = cv.id
         WHERE cv.customer_id = c.id) AS last_message_at
  FROM crm.customers c
  LEFT JOIN crm.staff s ON s.id = c.owner_staff_id
 WHERE c.deleted_at IS NULL;

-- Documentation that mentioned contacts.
COMMENT ON TABLE crm.customers IS 'Customers of an organization (leads, patients, clients), soft-deletable.';
COMMENT ON COLUMN crm.customers.owner_staff_id IS 'Staff member responsible for this customer; NULL when unassigned or the staff member was deleted.';
COMMENT ON TABLE crm.conversations IS 'A thread of messages with one customer on one channel. Customers with conversations cannot be deleted (RESTRICT): soft-delete them instead.';
COMMENT ON TYPE crm.direction IS 'inbound: from the customer to the organization; outbound: the reverse.';
COMMENT ON COLUMN crm.calls.customer_id IS 'The matched customer, if any; NULL for unknown callers or once the customer is deleted.';
COMMENT ON COLUMN audit.events.table_name IS 'Schema-qualified name of the changed table, e.g. crm.customers.';
COMMENT ON VIEW crm.customer_overview IS 'Live (not soft-deleted) customers with owner, open task count and time of the last message.';
COMMENT ON COLUMN crm.customer_overview.open_task_count IS 'Tasks about the customer that are open or in progress.';
