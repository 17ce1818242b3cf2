//! Paged lists of the admin API (docs/api.md, "Lists"). Every list takes
//! `limit` (1 to its maximum, 100 when absent) and `cursor`, and answers
//! `{"items": [...], "next_cursor": "…"}`; `next_cursor` is `null` on the
//! last page. A cursor is a keyset position (the last item's key), never an
//! offset, so a page is right while rows are added; it is sealed with a
//! keyed BLAKE3 tag over the list's name and the position, so a tampered
//! cursor, or one from another list, is a 400 instead of a wrong page.

use std::fmt::Display;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::error::ApiError;

/// One page of a list.
#[derive(utoipa::ToSchema, Debug, Serialize)]
pub struct Page<T> {
    /// This page's items, in the list's order.
    pub items: Vec<T>,
    /// Ask with `cursor=<this>` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Seals and opens cursors (one key per installation: every node derives
/// it from the same cookie key, so a cursor works on any node).
pub struct Cursors {
    key: [u8; 32],
}

/// Bytes of a cursor's tag (96 bits: guessing one is hopeless).
const TAG: usize = 12;

impl Cursors {
    /// Cursors keyed from `secret` (the installation's cookie signing key).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: blake3::derive_key("clickward 2026-12 list cursors", secret),
        }
    }

    fn tag(&self, list: &str, position: &str) -> [u8; TAG] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(list.as_bytes());
        h.update(&[0]);
        h.update(position.as_bytes());
        let mut out = [0u8; TAG];
        out.copy_from_slice(&h.finalize().as_bytes()[..TAG]);
        out
    }

    /// The cursor of `position` in `list`.
    pub fn seal(&self, list: &str, position: &str) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(position),
            URL_SAFE_NO_PAD.encode(self.tag(list, position))
        )
    }

    /// The position a `cursor` of `list` holds (`None`: the first page).
    ///
    /// # Errors
    /// 400 when the cursor was not made by this installation for this list
    /// (changed, cut short, or from another list).
    pub fn open<K: FromStr>(
        &self,
        list: &str,
        cursor: Option<&str>,
    ) -> Result<Option<K>, ApiError> {
        let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let bad = || {
            ApiError::bad_request(format!(
                "cursor: not a cursor of the {list} list (changed, cut short, or from another list); \
                 start again without one"
            ))
        };
        let (position, tag) = cursor.split_once('.').ok_or_else(bad)?;
        let position = URL_SAFE_NO_PAD
            .decode(position)
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(bad)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        // Constant-time enough: the tag is compared whole, and a forger
        // learns nothing from a 400 but "no".
        if tag.len() != TAG || !constant_eq(&tag, &self.tag(list, &position)) {
            return Err(bad());
        }
        position.parse().map(Some).map_err(|_| bad())
    }

    /// Cuts `rows` (asked for `limit + 1`) to a page: the extra row, when it
    /// came, says there is a next page, whose cursor is the last kept row's
    /// `key`.
    pub fn page<T, K: Display>(
        &self,
        list: &str,
        mut rows: Vec<T>,
        limit: u32,
        key: impl Fn(&T) -> K,
    ) -> Page<T> {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| self.seal(list, &key(r).to_string()))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    /// A page of a list held whole in memory (the catalogue, endpoints,
    /// rules, keys: hundreds to thousands of rows), in ascending `key`
    /// order, after the cursor's key: a keyset as the stored lists are.
    ///
    /// # Errors
    /// A cursor [`Cursors::open`] refuses.
    pub fn page_all<T, K>(
        &self,
        list: &str,
        mut all: Vec<T>,
        q: &PageArgs,
        max: u32,
        key: impl Fn(&T) -> K,
    ) -> Result<Page<T>, ApiError>
    where
        K: Ord + Display + FromStr,
    {
        let limit = limit(q.limit.as_deref(), max)?;
        let after: Option<K> = self.open(list, q.cursor.as_deref())?;
        all.sort_by_key(&key);
        let rows: Vec<T> = all
            .into_iter()
            .filter(|r| after.as_ref().is_none_or(|a| key(r) > *a))
            .take(limit as usize + 1)
            .collect();
        Ok(self.page(list, rows, limit, key))
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `limit` and `cursor` of a list without other arguments.
#[derive(utoipa::IntoParams, Debug, Default, serde::Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageArgs {
    /// 1 to the list's maximum; 100 when absent.
    pub limit: Option<String>,
    /// `next_cursor` of the page before.
    pub cursor: Option<String>,
}

/// The query of a route that takes none: any key is a 400 naming it.
#[derive(utoipa::IntoParams, Debug, Default, serde::Deserialize)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// Most rows of a catalogue-sized list in one page.
pub const MAX_LIMIT: u32 = 1000;

/// A list's `limit=`: 100 when absent, else 1..=`max`.
///
/// # Errors
/// 400 naming the range.
pub fn limit(text: Option<&str>, max: u32) -> Result<u32, ApiError> {
    match text {
        None | Some("") => Ok(100.min(max)),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_for_its_list_and_unchanged() {
        let c = Cursors::new(b"secret");
        let cur = c.seal("links", "solare");
        assert_eq!(
            c.open::<String>("links", Some(&cur))
                .ok()
                .flatten()
                .as_deref(),
            Some("solare")
        );
        assert!(c.open::<String>("programs", Some(&cur)).is_err());
        let mut changed = cur.clone().into_bytes();
        changed[0] ^= 1;
        let changed = String::from_utf8(changed).unwrap_or_default();
        assert!(c.open::<String>("links", Some(&changed)).is_err());
        assert!(c.open::<String>("links", Some("nonsense")).is_err());
        assert!(
            Cursors::new(b"other")
                .open::<String>("links", Some(&cur))
                .is_err()
        );
        assert!(matches!(c.open::<String>("links", None), Ok(None)));
    }

    #[test]
    fn pages_of_a_list_in_memory_cover_it_once() {
        let c = Cursors::new(b"k");
        let all: Vec<i64> = (1..=25).rev().collect();
        let mut q = PageArgs {
            limit: Some("10".into()),
            cursor: None,
        };
        let mut seen = Vec::new();
        loop {
            let p = c
                .page_all("n", all.clone(), &q, 1000, |v| *v)
                .unwrap_or_else(|_| unreachable!());
            seen.extend(p.items);
            match p.next_cursor {
                Some(next) => q.cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (1..=25).collect::<Vec<_>>());
        assert!(limit(Some("0"), 1000).is_err());
        assert!(limit(Some("1001"), 1000).is_err());
        assert_eq!(limit(None, 1000).ok(), Some(100));
    }
}
