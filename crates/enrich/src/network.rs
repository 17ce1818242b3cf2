//! The network an address belongs to, from ASN and anonymous-IP MaxMind DB
//! files, for the `hosting` and `anonymous` fraud rules.
//!
//! Layouts read (by each record's fields, so either kind of file works in
//! any order):
//! - MaxMind GeoLite2-ASN / GeoIP2-ISP, and the ip-location-db ASN mmdb
//!   (DB-IP / RouteViews, the npm `@ip-location-db/asn-mmdb` package):
//!   `autonomous_system_number`, `autonomous_system_organization`;
//! - MaxMind GeoIP2-Anonymous-IP: `is_anonymous_vpn`, `is_tor_exit_node`,
//!   `is_public_proxy`, `is_residential_proxy`, `is_hosting_provider`.
//!
//! A file of another kind (a City database) is refused when opened, with its
//! path and type; a corrupt record is an error of that lookup only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clickward_core::fraud::{AnonymousKinds, Network};
use maxminddb::Reader;
use serde::Deserialize;

use crate::geo::GeoError;

#[derive(Deserialize, Default)]
struct Record<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
    #[serde(default)]
    is_anonymous_vpn: bool,
    #[serde(default)]
    is_tor_exit_node: bool,
    #[serde(default)]
    is_public_proxy: bool,
    #[serde(default)]
    is_residential_proxy: bool,
    #[serde(default)]
    is_hosting_provider: bool,
}

struct Db {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
    ipv4_only: bool,
}

/// Opened network files. `Sync`; a lookup asks every file (each adds what it knows).
pub struct NetworkDb {
    dbs: Vec<Db>,
}

/// `true` for database types that hold networks: ASN, ISP, anonymous IP
/// (MaxMind's names), and ip-location-db's ASN files.
fn is_network_type(kind: &str) -> bool {
    let k = kind.to_ascii_lowercase();
    k.contains("asn") || k.contains("anonymous") || k.contains("isp")
}

impl NetworkDb {
    /// Opens each file and checks its type.
    ///
    /// # Errors
    /// [`GeoError`] naming the first file that is missing, unreadable, or of a
    /// kind that holds no networks (`NotLocation` is reused with the words
    /// "holds no networks").
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self, GeoError> {
        let mut dbs = Vec::new();
        for p in paths {
            let path = p.as_ref();
            let reader = crate::geo::open_reader(path)?;
            let kind = reader.metadata().database_type.clone();
            if !is_network_type(&kind) {
                return Err(GeoError::NotNetwork {
                    path: path.to_owned(),
                    kind,
                });
            }
            let ipv4_only = reader.metadata().ip_version == 4;
            dbs.push(Db {
                path: path.to_owned(),
                reader,
                ipv4_only,
            });
        }
        Ok(Self { dbs })
    }

    /// What the files know of `ip`; the first file with an ASN gives it.
    ///
    /// # Errors
    /// [`GeoError::Decode`] when a record found is corrupt.
    pub fn lookup(&self, ip: IpAddr) -> Result<Network, GeoError> {
        let mut n = Network::default();
        for db in &self.dbs {
            if db.ipv4_only && ip.is_ipv6() {
                continue;
            }
            let decode_err = |source| GeoError::Decode {
                path: db.path.clone(),
                source,
            };
            let found = db.reader.lookup(ip).map_err(decode_err)?;
            if !found.has_data() {
                continue;
            }
            let Some(r) = found.decode::<Record<'_>>().map_err(decode_err)? else {
                continue;
            };
            if n.asn.is_none() {
                n.asn = r.autonomous_system_number;
                n.org = r
                    .autonomous_system_organization
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned);
            }
            n.hosting |= r.is_hosting_provider;
            n.anonymous = AnonymousKinds {
                vpn: n.anonymous.vpn || r.is_anonymous_vpn,
                tor: n.anonymous.tor || r.is_tor_exit_node,
                proxy: n.anonymous.proxy || r.is_public_proxy,
                residential_proxy: n.anonymous.residential_proxy || r.is_residential_proxy,
            };
        }
        Ok(n)
    }
}
