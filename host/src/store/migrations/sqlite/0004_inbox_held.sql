-- Ticket events of a suspended connection are stored but held back from the app until it resumes;
-- leaving suspension gives them new ids after everything delivered meanwhile, so the app's one
-- cursor cannot have moved past them.
ALTER TABLE inbox ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
