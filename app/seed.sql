-- Development seed data for the CRM, applied after all migrations by
--   psql -X -v ON_ERROR_STOP=1 --single-transaction -f app/seed.sql
-- (`cargo xtask db template create` does this). Not used by the app itself.
--
-- Deterministic: no random(); every value derives from generate_series()
-- counters, so every template built from this file holds the same rows (only
-- trigger-maintained columns such as updated_at and audit timestamps differ).
-- Ids come from the identity columns and sequences, so those stay consistent.
-- Uses the post-refactor names (crm.customers, customer_id).

-- One organization ---------------------------------------------------------

INSERT INTO crm.organizations (name, slug, plan, timezone, settings, created_at)
VALUES ('Acme Dental', 'acme-dental', 'professional', 'America/Chicago',
        '{"business_hours": {"mon_fri": "08:00-17:00", "sat": "09:00-13:00"},
          "appointment_reminders": {"sms": true, "hours_before": 24},
          "branding": {"primary_color": "#0e7490"}}'::jsonb,
        TIMESTAMPTZ '2023-11-02 10:15:00-05');

-- Staff ---------------------------------------------------------------------

INSERT INTO crm.staff (organization_id, email, full_name, role, is_active, created_at)
SELECT o.id, s.email, s.full_name, s.role::crm.staff_role, s.is_active,
       TIMESTAMPTZ '2023-11-02 10:30:00-05' + s.n * INTERVAL '1 day'
  FROM crm.organizations o,
       (VALUES (1, 'dana.whitaker@acmedental.example',  'Dana Whitaker',   'owner', true),
               (2, 'marcus.lee@acmedental.example',     'Marcus Lee',      'admin', true),
               (3, 'priya.natarajan@acmedental.example', 'Priya Natarajan', 'agent', true),
               (4, 'tom.alvarez@acmedental.example',    'Tom Alvarez',     'agent', false))
       AS s (n, email, full_name, role, is_active)
 WHERE o.slug = 'acme-dental'
 ORDER BY s.n;

-- Helpers for this script only: ids by position.
CREATE TEMPORARY TABLE seed_staff AS
SELECT row_number() OVER (ORDER BY id)::int AS n, id
  FROM crm.staff;

-- 120 customers ---------------------------------------------------------------

INSERT INTO crm.customers (organization_id, owner_staff_id, first_name, last_name, email, phone,
                           lifecycle_stage, date_of_birth, attributes, created_at, updated_at)
SELECT o.id,
       CASE WHEN g % 9 = 0 THEN NULL ELSE (SELECT id FROM seed_staff WHERE n = 1 + g % 3) END,
       fn.name,
       ln.name,
       CASE WHEN g % 15 = 0 THEN NULL
            ELSE replace(lower(fn.name || '.' || ln.name || g), '''', '') || '@example.com' END,
       CASE WHEN g % 20 = 0 THEN NULL ELSE '+1312555' || lpad((1000 + g)::text, 4, '0') END,
       CASE WHEN g % 10 < 6 THEN 'active' WHEN g % 10 < 9 THEN 'lead' ELSE 'inactive' END,
       DATE '1945-03-01' + (g * 173) % 24000,
       jsonb_build_object(
           'insurance', (ARRAY['Delta Dental', 'Cigna', 'Aetna', 'MetLife', 'self-pay'])[1 + g % 5],
           'preferred_channel', (ARRAY['sms', 'email', 'phone'])[1 + g % 3],
           'referral_source', (ARRAY['google', 'friend', 'insurance directory', 'walk-in'])[1 + g % 4],
           'recall_interval_months', CASE WHEN g % 4 = 0 THEN 3 ELSE 6 END),
       TIMESTAMPTZ '2024-01-08 09:00:00-06' + g * INTERVAL '2 days 3 hours',
       TIMESTAMPTZ '2024-01-08 09:00:00-06' + g * INTERVAL '2 days 3 hours'
  FROM crm.organizations o,
       generate_series(1, 120) AS g
       CROSS JOIN LATERAL (SELECT (ARRAY['Olivia', 'Liam', 'Emma', 'Noah', 'Ava', 'Elijah', 'Sophia',
                                         'James', 'Isabella', 'Lucas', 'Mia', 'Mateo', 'Amelia',
                                         'Ethan', 'Harper', 'Daniel', 'Evelyn', 'Aiden', 'Abigail',
                                         'Samuel', 'Emily', 'Henry', 'Ella', 'Jackson', 'Grace',
                                         'Wei', 'Fatima', 'Diego', 'Aisha', 'Kenji'])[1 + (g * 7) % 30]) AS fn (name)
       CROSS JOIN LATERAL (SELECT (ARRAY['Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia',
                                         'Miller', 'Davis', 'Rodriguez', 'Martinez', 'Hernandez',
                                         'Lopez', 'Gonzalez', 'Wilson', 'Anderson', 'Thomas', 'Taylor',
                                         'Moore', 'Jackson', 'Nguyen', 'Kim', 'Patel', 'O''Brien',
                                         'Kowalski', 'Okafor'])[1 + (g * 11) % 25]) AS ln (name)
 WHERE o.slug = 'acme-dental'
 ORDER BY g;

CREATE TEMPORARY TABLE seed_customer AS
SELECT row_number() OVER (ORDER BY id)::int AS n, id, organization_id, owner_staff_id, phone, created_at
  FROM crm.customers;

-- Conversations with every second customer, 2-4 messages each -----------------

INSERT INTO crm.conversations (organization_id, customer_id, assigned_staff_id, channel, status,
                               subject, opened_at, closed_at)
SELECT c.organization_id,
       c.id,
       COALESCE(c.owner_staff_id, (SELECT id FROM seed_staff WHERE n = 3)),
       ch.channel::crm.channel,
       st.status::crm.conversation_status,
       (ARRAY['Appointment request', 'Question about my bill', 'Reschedule cleaning',
              'Insurance coverage', 'Tooth sensitivity', 'Recall reminder'])[1 + c.n % 6],
       c.created_at + INTERVAL '1 day 2 hours',
       CASE WHEN st.status = 'closed' THEN c.created_at + INTERVAL '3 days 5 hours' END
  FROM seed_customer c
       CROSS JOIN LATERAL (SELECT (ARRAY['sms', 'email', 'web_chat', 'sms'])[1 + (c.n / 2) % 4]) AS ch (channel)
       CROSS JOIN LATERAL (SELECT CASE WHEN c.n % 12 = 0 THEN 'open'
                                       WHEN c.n % 12 = 4 THEN 'snoozed'
                                       WHEN c.n % 12 = 8 THEN 'open'
                                       ELSE 'closed' END) AS st (status)
 WHERE c.n % 2 = 0
 ORDER BY c.n;

INSERT INTO crm.messages (conversation_id, direction, sender_staff_id, body, metadata, sent_at, read_at)
SELECT cv.id,
       d.direction::crm.direction,
       CASE WHEN d.direction = 'outbound' THEN cv.assigned_staff_id END,
       CASE WHEN d.direction = 'inbound'
            THEN (ARRAY['Hi, I would like to book a cleaning next week if possible.',
                        'Can you tell me what my insurance covers for a crown?',
                        'I need to move my appointment on Thursday.',
                        'My tooth has been sensitive to cold since the filling.',
                        'Thanks, that works for me!',
                        'Is there parking near the office?'])[1 + (cv.id + i) % 6]
            ELSE (ARRAY['Thanks for reaching out! We have openings Tuesday at 10:00 or Wednesday at 14:30.',
                        'I have checked with your insurer: a crown is covered at 50% after the deductible.',
                        'No problem, I have moved you to Friday at 9:00.',
                        'Sorry to hear that. Dr. Whitaker can see you tomorrow at 11:00.',
                        'You are all set. See you soon!',
                        'Yes, there is free parking behind the building.'])[1 + (cv.id + i) % 6]
       END,
       jsonb_build_object('provider', CASE cv.channel WHEN 'email' THEN 'sendgrid'
                                                      WHEN 'sms' THEN 'twilio'
                                                      ELSE 'widget' END,
                          'delivery', 'delivered'),
       cv.opened_at + (i - 1) * INTERVAL '47 minutes',
       CASE WHEN d.direction = 'inbound' AND cv.status <> 'closed' AND i = k.count THEN NULL
            ELSE cv.opened_at + (i - 1) * INTERVAL '47 minutes' + INTERVAL '9 minutes' END
  FROM crm.conversations cv
       CROSS JOIN LATERAL (SELECT 2 + cv.id::int % 3) AS k (count)
       CROSS JOIN LATERAL generate_series(1, k.count) AS i
       CROSS JOIN LATERAL (SELECT CASE WHEN i % 2 = 1 THEN 'inbound' ELSE 'outbound' END) AS d (direction)
 ORDER BY cv.id, i;

-- Tasks -----------------------------------------------------------------------

INSERT INTO crm.tasks (organization_id, customer_id, assignee_id, title, details, priority, status,
                       due_at, completed_at, created_at, updated_at)
SELECT o.id,
       CASE WHEN g % 10 = 0 THEN NULL ELSE (SELECT id FROM seed_customer WHERE n = 1 + (g * 13) % 120) END,
       CASE WHEN g % 11 = 0 THEN NULL ELSE (SELECT id FROM seed_staff WHERE n = 1 + g % 3) END,
       CASE WHEN g % 10 = 0
            THEN (ARRAY['Order impression material', 'Renew X-ray equipment certification',
                        'Update holiday hours on the website', 'Review overdue invoices',
                        'Restock fluoride varnish'])[1 + (g / 10) % 5]
            ELSE (ARRAY['Call back about treatment plan', 'Send insurance pre-authorization',
                        'Confirm appointment', 'Follow up on missed recall', 'Email invoice copy',
                        'Schedule 6-month cleaning', 'Check post-extraction healing'])[1 + g % 7]
       END,
       CASE WHEN g % 4 = 0 THEN 'Customer prefers a call after 17:00.' END,
       1 + g % 5,
       s.status::crm.task_status,
       TIMESTAMPTZ '2024-02-01 12:00:00-06' + g * INTERVAL '4 days 6 hours',
       CASE WHEN s.status = 'done' THEN TIMESTAMPTZ '2024-02-01 12:00:00-06' + g * INTERVAL '4 days 6 hours' - INTERVAL '3 hours' END,
       TIMESTAMPTZ '2024-01-29 08:00:00-06' + g * INTERVAL '4 days',
       TIMESTAMPTZ '2024-01-29 08:00:00-06' + g * INTERVAL '4 days'
  FROM crm.organizations o,
       generate_series(1, 50) AS g
       CROSS JOIN LATERAL (SELECT CASE WHEN g % 7 = 0 THEN 'cancelled'
                                       WHEN g % 2 = 0 THEN 'done'
                                       WHEN g % 3 = 0 THEN 'in_progress'
                                       ELSE 'open' END) AS s (status)
 WHERE o.slug = 'acme-dental'
 ORDER BY g;

-- Phone numbers and calls -------------------------------------------------------

INSERT INTO crm.phone_numbers (organization_id, number, label, capabilities, forward_to_staff_id, is_primary, created_at)
SELECT o.id, p.number, p.label, p.capabilities::jsonb,
       (SELECT id FROM seed_staff WHERE n = p.forward_to),
       p.is_primary, TIMESTAMPTZ '2023-11-03 09:00:00-05' + p.n * INTERVAL '1 hour'
  FROM crm.organizations o,
       (VALUES (1, '+13125550100', 'Front desk',  '{"sms": true, "voice": true, "mms": true}', NULL, true),
               (2, '+13125550101', 'Billing',     '{"sms": true, "voice": true, "mms": false}', 2, false),
               (3, '+13125550102', 'After hours', '{"sms": false, "voice": true, "mms": false}', 1, false))
       AS p (n, number, label, capabilities, forward_to, is_primary)
 WHERE o.slug = 'acme-dental'
 ORDER BY p.n;

CREATE TEMPORARY TABLE seed_phone AS
SELECT row_number() OVER (ORDER BY id)::int AS n, id
  FROM crm.phone_numbers;

INSERT INTO crm.calls (organization_id, phone_number_id, customer_id, staff_id, direction, remote_number,
                       status, started_at, answered_at, ended_at, recording)
SELECT o.id,
       (SELECT id FROM seed_phone WHERE n = CASE WHEN g % 6 = 0 THEN 3 WHEN g % 4 = 0 THEN 2 ELSE 1 END),
       c.id,
       CASE WHEN s.status = 'answered' OR d.direction = 'outbound'
            THEN (SELECT id FROM seed_staff WHERE n = 1 + g % 3) END,
       d.direction::crm.direction,
       COALESCE(c.phone, '+1773555' || lpad((2000 + g)::text, 4, '0')),
       s.status::crm.call_status,
       t.started_at,
       CASE WHEN s.status = 'answered' THEN t.started_at + INTERVAL '8 seconds' END,
       t.started_at + CASE s.status WHEN 'answered' THEN (60 + (g * 37) % 600) * INTERVAL '1 second'
                                    WHEN 'missed' THEN INTERVAL '25 seconds'
                                    WHEN 'voicemail' THEN INTERVAL '55 seconds'
                                    ELSE INTERVAL '2 seconds' END,
       CASE WHEN s.status = 'answered' AND g % 4 = 1
            THEN jsonb_build_object('provider_id', 'RE' || lpad(g::text, 8, '0'),
                                    'transcript', g % 8 = 1)
       END
  FROM crm.organizations o,
       generate_series(1, 60) AS g
       CROSS JOIN LATERAL (SELECT CASE WHEN g % 3 = 0 THEN 'outbound' ELSE 'inbound' END) AS d (direction)
       CROSS JOIN LATERAL (SELECT CASE WHEN d.direction = 'outbound' THEN
                                           CASE WHEN g % 9 = 0 THEN 'failed' ELSE 'answered' END
                                       WHEN g % 5 = 0 THEN 'missed'
                                       WHEN g % 7 = 0 THEN 'voicemail'
                                       ELSE 'answered' END) AS s (status)
       CROSS JOIN LATERAL (SELECT TIMESTAMPTZ '2024-03-01 08:05:00-06'
                                  + g * INTERVAL '1 day 2 hours 13 minutes') AS t (started_at)
       LEFT JOIN seed_customer c ON g % 8 <> 0 AND c.n = 1 + (g * 7) % 120
 WHERE o.slug = 'acme-dental'
 ORDER BY g;

-- Notes -------------------------------------------------------------------------

INSERT INTO crm.notes (customer_id, author_staff_id, body, is_pinned, metadata, created_at, updated_at)
SELECT c.id,
       (SELECT id FROM seed_staff WHERE n = 1 + g % 3),
       (ARRAY['Prefers morning appointments.',
              'Anxious about needles; offer numbing gel first.',
              'Discussed whitening options, will decide after the holidays.',
              'Allergic to latex.',
              'Asked for an itemized receipt for HSA reimbursement.',
              'Son is also a patient; schedule together when possible.',
              'Payment plan agreed: 4 monthly installments.'])[1 + g % 7],
       g % 9 = 0,
       jsonb_build_object('source', (ARRAY['call', 'visit', 'email'])[1 + g % 3],
                          'topics', CASE WHEN g % 2 = 0 THEN '["scheduling"]'::jsonb
                                         ELSE '["billing", "insurance"]'::jsonb END),
       c.created_at + g * INTERVAL '3 hours',
       c.created_at + g * INTERVAL '3 hours'
  FROM generate_series(1, 50) AS g
       JOIN seed_customer c ON c.n = 1 + (g * 5) % 120
 ORDER BY g;

-- Tags --------------------------------------------------------------------------

INSERT INTO crm.tags (organization_id, name, color)
SELECT o.id, t.name, t.color
  FROM crm.organizations o,
       (VALUES (1, 'VIP', '#b45309'),
               (2, 'New patient', '#15803d'),
               (3, 'Insurance: Delta', '#1d4ed8'),
               (4, 'Orthodontics', '#7c3aed'),
               (5, 'Overdue recall', '#dc2626'),
               (6, 'Payment plan', '#0f766e'))
       AS t (n, name, color)
 WHERE o.slug = 'acme-dental'
 ORDER BY t.n;

INSERT INTO crm.customer_tags (customer_id, tag_id, tagged_at)
SELECT c.id, t.id, c.created_at + INTERVAL '1 hour'
  FROM seed_customer c
       JOIN (SELECT row_number() OVER (ORDER BY id)::int AS n, id FROM crm.tags) AS t
         ON t.n = 1 + c.n % 6 OR (c.n % 4 = 0 AND t.n = 1 + (c.n / 4) % 6)
 ORDER BY c.n, t.n;

-- Some history for the audit log (audit.events is filled by triggers) -------------

-- Leads who became patients.
UPDATE crm.customers c
   SET lifecycle_stage = 'active'
  FROM seed_customer s
 WHERE s.id = c.id AND c.lifecycle_stage = 'lead' AND s.n % 3 = 0;

-- A few customers soft-deleted (they disappear from crm.customer_overview).
UPDATE crm.customers c
   SET deleted_at = s.created_at + INTERVAL '30 days'
  FROM seed_customer s
 WHERE s.id = c.id AND s.n IN (17, 58, 99);

-- One inactive customer removed for good (no conversations, so RESTRICT does not block it;
-- its tasks, notes and tags go with it and its calls keep a NULL customer_id).
DELETE FROM crm.customers c
 USING seed_customer s
 WHERE s.id = c.id AND s.n = 119;

DROP TABLE seed_staff, seed_customer, seed_phone;
