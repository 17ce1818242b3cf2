//! JSON Schemas of the vocabulary types with their own serde (newtypes shown
//! as text or numbers), for the admin API's OpenAPI document. Types that
//! derive serde plainly derive `utoipa::ToSchema` where they are defined.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// Implements `utoipa::ToSchema` for a type serialized as one scalar:
/// `scalar_schema!(Type, String, "description", pattern = "...", max = N)`.
#[macro_export]
macro_rules! scalar_schema {
    ($ty:ty, $kind:ident, $desc:expr $(, pattern = $pat:expr)? $(, max_len = $max:expr)? $(, min = $min:expr, max = $maxv:expr)?) => {
        impl ::utoipa::PartialSchema for $ty {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                $crate::schema::scalar(
                    ::utoipa::openapi::schema::Type::$kind,
                    $desc,
                    None $(.or(Some($pat)))?,
                    None $(.or(Some($max)))?,
                    None $(.or(Some(($min, $maxv))))?,
                )
            }
        }
        impl ::utoipa::ToSchema for $ty {}
    };
}

/// One scalar schema (used by [`scalar_schema!`]).
pub fn scalar(
    kind: Type,
    desc: &str,
    pattern: Option<&str>,
    max_len: Option<usize>,
    range: Option<(f64, f64)>,
) -> RefOr<Schema> {
    let mut b = ObjectBuilder::new()
        .schema_type(kind)
        .description(Some(desc))
        .pattern(pattern)
        .max_length(max_len);
    if let Some((lo, hi)) = range {
        b = b.minimum(Some(lo)).maximum(Some(hi));
    }
    b.into()
}

scalar_schema!(
    crate::id::LinkCode,
    String,
    "A tracking link's code: 1 to 64 bytes of `A-Z a-z 0-9 _ - .`, case-sensitive.",
    pattern = "^[A-Za-z0-9_.-]{1,64}$",
    max_len = crate::id::MAX_CODE_LEN
);
scalar_schema!(
    crate::id::Slug,
    String,
    "A program's or affiliate's slug: 1 to 64 bytes of `A-Z a-z 0-9 _ - .`.",
    pattern = "^[A-Za-z0-9_.-]{1,64}$",
    max_len = crate::id::MAX_CODE_LEN
);
scalar_schema!(
    crate::id::ClickId,
    String,
    "A click id: a ULID, 26 characters of Crockford base32.",
    pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$"
);
scalar_schema!(
    crate::id::ConversionId,
    String,
    "A conversion id: a ULID, 26 characters of Crockford base32.",
    pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$"
);
impl utoipa::PartialSchema for crate::money::Currency {
    fn schema() -> RefOr<Schema> {
        // Every code `Currency::parse` knows (ISO 4217 with a minor unit),
        // so a client generating from the document sends codes we take.
        let letters = b'A'..=b'Z';
        let codes: Vec<String> = letters
            .clone()
            .flat_map(|a| letters.clone().map(move |b| [a, b]))
            .flat_map(|[a, b]| (b'A'..=b'Z').map(move |c| [a, b, c]))
            .filter_map(|code| {
                let code = std::str::from_utf8(&code).ok()?;
                crate::money::Currency::parse(code)
                    .ok()
                    .map(|_| code.to_owned())
            })
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An ISO 4217 currency code (`USD`); the amount's minor unit is the code's.",
            ))
            .enum_values(Some(codes))
            .into()
    }
}
impl utoipa::ToSchema for crate::money::Currency {}

/// The schema of an IANA time zone name as `jiff` knows it (`Asia/Tokyo`,
/// `UTC`), for fields kept as text: `#[schema(schema_with = time_zone)]`.
pub fn time_zone() -> Schema {
    let names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
    let b = ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("An IANA time zone name (`Europe/Berlin`, `UTC`)."));
    // Without a time zone database the names cannot be listed.
    if names.is_empty() {
        b
    } else {
        b.enum_values(Some(names))
    }
    .into()
}
scalar_schema!(
    crate::money::BasisPoints,
    Integer,
    "Basis points: 1/100 of a percent, 0 to 10000.",
    min = 0.0,
    max = 10_000.0
);
impl utoipa::PartialSchema for crate::link::RedirectStatus {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(Some(
                "The redirect's status code: 302 or 307 (never a cached 301/308).",
            ))
            .enum_values(Some([302, 307]))
            .into()
    }
}
impl utoipa::ToSchema for crate::link::RedirectStatus {}
scalar_schema!(
    crate::program::Recurring,
    String,
    "Which recurring payments pay commission: `first`, `forever` or `<n> months`.",
    pattern = "^(first|forever|[0-9]+ months?)$"
);

/// The schema of an endpoint's event filter: `*`, `<kind>.*` or one of
/// [`crate::event::TYPES`], at least one:
/// `#[schema(schema_with = event_filter)]`.
pub fn event_filter() -> Schema {
    let names: Vec<String> = ["*"]
        .iter()
        .chain(
            [
                "conversion.*",
                "payout.*",
                "program.*",
                "affiliate.*",
                "link.*",
                "webhook.*",
            ]
            .iter(),
        )
        .chain(crate::event::TYPES.iter())
        .map(|s| (*s).to_owned())
        .collect();
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names)),
        )
        .min_items(Some(1))
        .description(Some(
            "Event filter: `*`, `<kind>.*` or event types (docs/events.md); postbacks take conversion events only.",
        ))
        .into()
}
