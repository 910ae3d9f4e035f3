-- One row per live contact with the numbers the contact list shows.

CREATE VIEW crm.contact_overview AS
SELECT c.id AS contact_id,
       c.organization_id,
       concat_ws(' ', c.first_name, NULLIF(c.last_name, '')) AS full_name,
       c.email,
       c.phone,
       c.lifecycle_stage,
       s.full_name AS owner_name,
       (SELECT count(*)
          FROM crm.tasks t
         WHERE t.contact_id = c.id
           AND t.status IN ('open', 'in_progress')) AS open_task_count,
       (SELECT max(m.sent_at)
          FROM crm.conversations cv
          JOIN crm.messages m ON m.conversation_id = cv.id
         WHERE cv.contact_id = c.id) AS last_message_at
  FROM crm.contacts c
  LEFT JOIN crm.staff s ON s.id = c.owner_staff_id
 WHERE c.deleted_at IS NULL;
COMMENT ON VIEW crm.contact_overview IS 'Live (not soft-deleted) contacts with owner, open task count and time of the last message.';
COMMENT ON COLUMN crm.contact_overview.open_task_count IS 'Tasks about the contact that are open or in progress.';
