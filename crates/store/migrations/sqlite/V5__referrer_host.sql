-- The referrer's host as its own column, so reports can group by it
-- (issue 4: group_by referrer_host).
ALTER TABLE clicks ADD COLUMN referrer_host TEXT;
