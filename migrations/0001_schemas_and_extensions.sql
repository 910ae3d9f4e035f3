-- Schemas, extensions and shared domains.
--
-- crm   : the application's data (organizations, staff, customers, conversations, ...)
-- audit : an append-only change log written by triggers

CREATE SCHEMA crm;
COMMENT ON SCHEMA crm IS 'CRM data: organizations, their staff, customers and all interactions with them.';

CREATE SCHEMA audit;
COMMENT ON SCHEMA audit IS 'Append-only change history, written by triggers on the crm tables.';

-- citext is a trusted extension (PostgreSQL 13+): the database owner can create it.
CREATE EXTENSION citext WITH SCHEMA public;

CREATE DOMAIN crm.email_address AS public.citext
    CONSTRAINT email_address_format CHECK (VALUE ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$');
COMMENT ON DOMAIN crm.email_address IS 'A case-insensitive e-mail address with a minimal syntax check.';

CREATE DOMAIN crm.phone_e164 AS text
    CONSTRAINT phone_e164_format CHECK (VALUE ~ '^\+[1-9][0-9]{6,14}$');
COMMENT ON DOMAIN crm.phone_e164 IS 'A phone number in E.164 format, e.g. +15551234567.';
