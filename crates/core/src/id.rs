//! Identifiers. Everything that arrives from outside is parsed once into a
//! newtype here; the rest of the code takes these types, never raw strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// Longest accepted link code or slug, in bytes.
pub const MAX_CODE_LEN: usize = 64;

/// Why a link code or slug was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// The value was empty.
    #[error("is empty")]
    Empty,
    /// The value is longer than [`MAX_CODE_LEN`] bytes.
    #[error("is {0} bytes long; at most {MAX_CODE_LEN} are allowed")]
    TooLong(usize),
    /// The value holds a character outside `A-Z a-z 0-9 _ - .`.
    #[error("contains {0:?}; only letters, digits, '_', '-' and '.' are allowed")]
    BadChar(char),
}

fn check_code(s: &str) -> Result<(), CodeError> {
    if s.is_empty() {
        return Err(CodeError::Empty);
    }
    if s.len() > MAX_CODE_LEN {
        return Err(CodeError::TooLong(s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(CodeError::BadChar(c));
    }
    Ok(())
}

macro_rules! code_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses a value: 1 to [`MAX_CODE_LEN`] bytes of `A-Z a-z 0-9 _ - .`.
            ///
            /// # Errors
            /// [`CodeError`] naming what is wrong with it.
            pub fn parse(s: &str) -> Result<Self, CodeError> {
                check_code(s)?;
                Ok(Self(s.to_owned()))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = CodeError;
            fn from_str(s: &str) -> Result<Self, CodeError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(|e| serde::de::Error::custom(format!("{s:?} {e}")))
            }
        }
    };
}

code_newtype!(
    /// The code of a tracking link: the `{code}` of `/r/{code}`, `/ref/{code}`
    /// and `/go?id={code}`. Case-sensitive.
    LinkCode
);
code_newtype!(
    /// The stable public name of a program or an affiliate, used in URLs,
    /// the CLI, the catalogue file and the `{program}` / `{affiliate}` macros.
    Slug
);

/// The id of one click: a ULID whose timestamp part is the click's millisecond.
///
/// Printed as 26 characters of Crockford base32; stored as 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClickId(pub Ulid);

impl ClickId {
    /// Builds the id of a click at `ts_ms` (UTC milliseconds) with 80 bits of
    /// caller-supplied randomness (the low 80 bits of `random` are used).
    pub fn from_parts(ts_ms: u64, random: u128) -> Self {
        Self(Ulid::from_parts(ts_ms, random))
    }

    /// The 16 big-endian bytes of the ULID (sorts like the id).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// The id from its 16 stored bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(Ulid::from_bytes(b))
    }

    /// The millisecond timestamp part (UTC).
    pub fn timestamp_ms(self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for ClickId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.pad(self.0.array_to_str(&mut buf))
    }
}

/// Why a click id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a click id (expected 26 characters of Crockford base32)")]
pub struct ClickIdError;

impl FromStr for ClickId {
    type Err = ClickIdError;
    fn from_str(s: &str) -> Result<Self, ClickIdError> {
        Ulid::from_string(s).map(Self).map_err(|_| ClickIdError)
    }
}

impl Serialize for ClickId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClickId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_codes_are_bounded_and_plain() {
        assert!(LinkCode::parse("amazon_kindle").is_ok());
        assert!(LinkCode::parse("a.b-c_9").is_ok());
        assert_eq!(LinkCode::parse(""), Err(CodeError::Empty));
        assert_eq!(
            LinkCode::parse(&"x".repeat(10_000)),
            Err(CodeError::TooLong(10_000))
        );
        assert_eq!(LinkCode::parse("a/b"), Err(CodeError::BadChar('/')));
        assert_eq!(LinkCode::parse("日本"), Err(CodeError::BadChar('日')));
    }

    #[test]
    fn click_id_round_trips_through_text_and_bytes() {
        let id = ClickId::from_parts(1_700_000_000_123, 42);
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<ClickId>(), Ok(id));
        assert_eq!(ClickId::from_bytes(id.to_bytes()), id);
        assert_eq!(id.timestamp_ms(), 1_700_000_000_123);
        assert!("not-a-ulid".parse::<ClickId>().is_err());
    }
}

/// The id of one conversion: a ULID, printed as 26 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversionId(pub Ulid);

impl fmt::Display for ConversionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.pad(self.0.array_to_str(&mut buf))
    }
}

impl FromStr for ConversionId {
    type Err = ClickIdError;
    fn from_str(s: &str) -> Result<Self, ClickIdError> {
        Ulid::from_string(s).map(Self).map_err(|_| ClickIdError)
    }
}

impl Serialize for ConversionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConversionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
