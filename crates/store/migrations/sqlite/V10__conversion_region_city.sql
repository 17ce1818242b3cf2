-- Conversions keep their click's region and city, as they keep its country,
-- so reports can group money by every dimension a click records (and still
-- can after raw clicks are purged).
ALTER TABLE conversions ADD COLUMN region TEXT;
ALTER TABLE conversions ADD COLUMN city TEXT;
UPDATE conversions SET (region, city) =
    (SELECT c.region, c.city FROM clicks c WHERE c.click_id = conversions.click_id)
WHERE click_id IS NOT NULL;
