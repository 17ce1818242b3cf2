//! Paged lists: the keyset query of [`ClickQuery`], as SQL both backends
//! run (`$n` placeholders, each used once and in order, which SQLite binds
//! by position as well).

use clickward_core::Micros;
use clickward_core::id::{ClickId, LinkCode, Slug};

/// A page of [`crate::ClickStore::page_clicks`]: filters, a keyset position
/// and an order. Clicks are ordered by click id, whose first 48 bits are
/// the click's time in ms: time order, ties broken by the id's random part.
/// A keyset (never an offset), so pages stay right while clicks are
/// written: a click written during the reading comes on a later page
/// (oldest first) or is not shown (newest first), and none is shown twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickQuery {
    /// Only this link's clicks.
    pub link: Option<LinkCode>,
    /// Only clicks on this affiliate's links.
    pub affiliate: Option<Slug>,
    /// Only this program's clicks.
    pub program: Option<Slug>,
    /// Clicks at or after this time (UTC µs).
    pub from: Option<Micros>,
    /// Clicks before this time (UTC µs).
    pub to: Option<Micros>,
    /// Only bot clicks (`true`) or only the others (`false`).
    pub bot: Option<bool>,
    /// Only unique clicks (`true`) or only repeats and bots (`false`).
    pub unique: Option<bool>,
    /// Only clicks a rule judged with this action (`flag`, `reject`,
    /// `block`); `Some(None)`: only clicks no rule judged.
    pub verdict: Option<Option<String>>,
    /// The keyset: only clicks strictly past this one in the order.
    pub after: Option<ClickId>,
    /// Oldest first (else newest first).
    pub oldest_first: bool,
    /// At most this many.
    pub limit: u32,
}

impl ClickQuery {
    /// The newest `limit` clicks, no filter.
    pub fn newest(limit: u32) -> Self {
        Self {
            link: None,
            affiliate: None,
            program: None,
            from: None,
            to: None,
            bot: None,
            unique: None,
            verdict: None,
            after: None,
            oldest_first: false,
            limit,
        }
    }
}

/// A bound value of [`click_page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bound {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
}

/// `WHERE … ORDER BY … LIMIT …` of `q` (to follow a `SELECT … FROM clicks
/// c` with its joins) and the values to bind, in placeholder order.
pub(crate) fn click_page(q: &ClickQuery) -> (String, Vec<Bound>) {
    let mut terms: Vec<String> = Vec::new();
    let mut values: Vec<Bound> = Vec::new();
    let bind = |values: &mut Vec<Bound>, v: Bound| {
        values.push(v);
        format!("${}", values.len())
    };
    if let Some(l) = &q.link {
        let p = bind(&mut values, Bound::Text(l.as_str().to_owned()));
        terms.push(format!(
            "c.link_id = (SELECT id FROM links WHERE code = {p})"
        ));
    }
    if let Some(a) = &q.affiliate {
        let p = bind(&mut values, Bound::Text(a.as_str().to_owned()));
        terms.push(format!(
            "c.affiliate_id = (SELECT id FROM affiliates WHERE slug = {p})"
        ));
    }
    if let Some(g) = &q.program {
        let p = bind(&mut values, Bound::Text(g.as_str().to_owned()));
        terms.push(format!(
            "c.program_id = (SELECT id FROM programs WHERE slug = {p})"
        ));
    }
    // The id starts with the click's ms (`floor(ts / 1000)`): bounds on it
    // let the primary key find a time range; `ts` keeps it exact.
    let ms = |us: Micros| u64::try_from(us.div_euclid(1000)).unwrap_or(0);
    if let Some(from) = q.from {
        let p = bind(
            &mut values,
            Bound::Bytes(ClickId::from_parts(ms(from), 0).to_bytes().to_vec()),
        );
        terms.push(format!("c.click_id >= {p}"));
        let p = bind(&mut values, Bound::Int(from));
        terms.push(format!("c.ts >= {p}"));
    }
    if let Some(to) = q.to {
        let p = bind(
            &mut values,
            Bound::Bytes(
                ClickId::from_parts(ms(to.saturating_sub(1)).saturating_add(1), 0)
                    .to_bytes()
                    .to_vec(),
            ),
        );
        terms.push(format!("c.click_id < {p}"));
        let p = bind(&mut values, Bound::Int(to));
        terms.push(format!("c.ts < {p}"));
    }
    match q.bot {
        Some(true) => terms.push("c.bot_reason IS NOT NULL".to_owned()),
        Some(false) => terms.push("c.bot_reason IS NULL".to_owned()),
        None => {}
    }
    match q.unique {
        Some(true) => terms.push("c.is_unique".to_owned()),
        Some(false) => terms.push("NOT c.is_unique".to_owned()),
        None => {}
    }
    match &q.verdict {
        Some(Some(action)) => {
            let p = bind(&mut values, Bound::Text(action.clone()));
            terms.push(format!("c.verdict = {p}"));
        }
        Some(None) => terms.push("c.verdict IS NULL".to_owned()),
        None => {}
    }
    let (cmp, dir) = if q.oldest_first {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    if let Some(after) = q.after {
        let p = bind(&mut values, Bound::Bytes(after.to_bytes().to_vec()));
        terms.push(format!("c.click_id {cmp} {p}"));
    }
    let limit = bind(&mut values, Bound::Int(i64::from(q.limit)));
    let filter = if terms.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", terms.join(" AND "))
    };
    (
        format!("{filter} ORDER BY c.click_id {dir} LIMIT {limit}"),
        values,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_values_in_order() {
        let mut q = ClickQuery::newest(10);
        q.link = Some(LinkCode::parse("solare").unwrap_or_else(|_| unreachable!()));
        q.from = Some(1_000_500);
        q.verdict = Some(None);
        q.after = Some(ClickId::from_parts(7, 7));
        let (sql, values) = click_page(&q);
        assert_eq!(values.len(), 5);
        for n in 1..=5 {
            assert_eq!(sql.matches(&format!("${n}")).count(), 1, "{sql}");
        }
        assert!(sql.ends_with("ORDER BY c.click_id DESC LIMIT $5"), "{sql}");
        assert!(sql.contains("c.click_id < $4"), "{sql}");
        assert_eq!(values[2], Bound::Int(1_000_500));
    }
}
