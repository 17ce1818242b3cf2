-- Conversions keep their click's region and city, as they keep its country,
-- so reports can group money by every dimension a click records (and still
-- can after raw clicks are purged).
ALTER TABLE conversions ADD COLUMN region TEXT;
ALTER TABLE conversions ADD COLUMN city TEXT;
UPDATE conversions v SET region = c.region, city = c.city
FROM clicks c WHERE c.click_id = v.click_id;
