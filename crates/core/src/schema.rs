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
scalar_schema!(
    crate::money::Currency,
    String,
    "An ISO 4217 currency code (`USD`).",
    pattern = "^[A-Z]{3}$"
);
scalar_schema!(
    crate::money::BasisPoints,
    Integer,
    "Basis points: 1/100 of a percent, 0 to 10000.",
    min = 0.0,
    max = 10_000.0
);
scalar_schema!(
    crate::link::RedirectStatus,
    Integer,
    "The redirect's status code: 302 or 307 (never a cached 301/308).",
    min = 302.0,
    max = 307.0
);
scalar_schema!(
    crate::program::Recurring,
    String,
    "Which recurring payments pay commission: `first`, `forever` or `<n> months`.",
    pattern = "^(first|forever|[0-9]+ months?)$"
);
