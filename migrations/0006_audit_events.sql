-- Audit log: every change to a contact is recorded as a jsonb diff.

CREATE TYPE audit.operation AS ENUM ('INSERT', 'UPDATE', 'DELETE');

-- An explicit sequence (rather than an identity column) so that ids can be
-- reserved in bulk by importers: nextval() does not depend on the table.
CREATE SEQUENCE audit.events_id_seq AS bigint;

CREATE TABLE audit.events (
    id               bigint NOT NULL DEFAULT nextval('audit.events_id_seq'::regclass),
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    transaction_id   bigint NOT NULL DEFAULT txid_current(),
    actor            text NOT NULL DEFAULT CURRENT_USER,
    table_name       text NOT NULL,
    row_id           bigint NOT NULL,
    organization_id  bigint,
    operation        audit.operation NOT NULL,
    old_row          jsonb,
    new_row          jsonb,
    changes          jsonb,
    CONSTRAINT events_pkey PRIMARY KEY (id),
    CONSTRAINT events_row_images_match_operation CHECK (
        CASE operation
            WHEN 'INSERT' THEN old_row IS NULL AND new_row IS NOT NULL
            WHEN 'UPDATE' THEN old_row IS NOT NULL AND new_row IS NOT NULL AND changes IS NOT NULL
            WHEN 'DELETE' THEN old_row IS NOT NULL AND new_row IS NULL
        END
    )
);
ALTER SEQUENCE audit.events_id_seq OWNED BY audit.events.id;
COMMENT ON TABLE audit.events IS 'Append-only history of changes to audited crm tables, written by triggers.';
COMMENT ON COLUMN audit.events.transaction_id IS 'txid_current() of the changing transaction: groups the events of one change.';
COMMENT ON COLUMN audit.events.actor IS 'Database role that made the change.';
COMMENT ON COLUMN audit.events.table_name IS 'Schema-qualified name of the changed table, e.g. crm.contacts.';
COMMENT ON COLUMN audit.events.organization_id IS 'Organization of the changed row (no foreign key: events outlive their organization).';
COMMENT ON COLUMN audit.events.changes IS 'For UPDATE: {"column": {"old": ..., "new": ...}} for each changed column except updated_at.';

CREATE INDEX events_table_name_row_id_idx ON audit.events (table_name, row_id, occurred_at);
CREATE INDEX events_organization_id_occurred_at_idx ON audit.events (organization_id, occurred_at DESC);

CREATE FUNCTION audit.record_contact_change() RETURNS trigger
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
    VALUES ('crm.contacts',
            (COALESCE(new_image, old_image) ->> 'id')::bigint,
            (COALESCE(new_image, old_image) ->> 'organization_id')::bigint,
            TG_OP::audit.operation,
            old_image,
            new_image,
            diff);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION audit.record_contact_change() IS 'AFTER trigger on crm.contacts: appends the change to audit.events.';

CREATE TRIGGER contacts_audit
    AFTER INSERT OR UPDATE OR DELETE ON crm.contacts
    FOR EACH ROW EXECUTE FUNCTION audit.record_contact_change();
