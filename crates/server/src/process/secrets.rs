//! The data directory and the secrets in it.
//!
//! - `secrets/cookie.key`: 64 random bytes, the key of the encrypted and
//!   signed first-party cookie (AES-256-GCM, via `cookie`'s private jar).
//! - `secrets/visitor-salts.json`: one random 32-byte salt per UTC day, kept
//!   only as long as the dedup window can reach back
//!   (`clickward_core::dedup::salts_to_keep`), then deleted from the file.
//!
//! Directories are created mode 0700 and files 0600.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{Context, bail};
use clickward_core::click::VisitorKey;
use clickward_core::{Micros, dedup, utc_day};
use clickward_enrich::visitor::{Salt, visitor_key};

/// Creates `dir` (and parents) with mode 0700 if missing.
///
/// # Errors
/// When the directory cannot be created.
pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file + rename), mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Loads the 64-byte cookie key, creating it on first start.
///
/// # Errors
/// When the file cannot be read or written, or holds fewer than 64 bytes.
pub fn cookie_key(dir: &Path) -> anyhow::Result<axum_extra::extract::cookie::Key> {
    ensure_private_dir(dir)?;
    let path = dir.join("cookie.key");
    if !path.exists() {
        let mut key = [0u8; 64];
        rand::fill(&mut key[..]);
        write_private(&path, &key)?;
    }
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 64 {
        bail!(
            "{} holds {} bytes; a cookie key needs 64 (delete it to make a new one, which logs every visitor out of dedup)",
            path.display(),
            bytes.len()
        );
    }
    Ok(axum_extra::extract::cookie::Key::from(&bytes[..64]))
}

/// Refuses to go on with a data directory that held a database and secrets
/// and has lost one of them: a missing or empty database would silently
/// start over (every click, conversion and API key gone), and new secrets
/// would silently end every attribution cookie, visitor cookie, session and
/// magic link (and give this node keys of its own). A directory with
/// neither is new: its secrets are made here, at once, so that from then on
/// a missing one is noticed. `init` (`--init`) makes what is missing
/// anyway. `sqlite` is false with a shared PostgreSQL store, whose database
/// is not in the directory.
///
/// # Errors
/// What is missing, where, and the two ways on.
pub fn check_data_dir(data_dir: &Path, sqlite: bool, init: bool) -> anyhow::Result<()> {
    let secrets = data_dir.join("secrets");
    if !init {
        check_held(data_dir, sqlite)?;
    }
    // New (or --init): make the secrets that are not there.
    cookie_key(&secrets)?;
    let salts = secrets.join("visitor-salts.json");
    if !salts.exists() {
        write_private(&salts, b"{}")?;
    }
    Ok(())
}

fn check_held(data_dir: &Path, sqlite: bool) -> anyhow::Result<()> {
    let db = data_dir.join("clickward.db");
    let secrets = data_dir.join("secrets");
    // With PostgreSQL the node's own data is its spool.
    let local = if sqlite {
        db.clone()
    } else {
        data_dir.join("spool.db")
    };
    let db_held = local.metadata().map(|m| m.len() > 0).unwrap_or(false);
    let secret_files = ["cookie.key", "visitor-salts.json"];
    let present: Vec<bool> = secret_files
        .iter()
        .map(|f| secrets.join(f).exists())
        .collect();
    let any_secret = present.iter().any(|p| *p);
    if sqlite && !db_held && any_secret {
        let what = if db.exists() {
            "is empty"
        } else {
            "is missing"
        };
        bail!(
            "{} {what}, but {} shows this data directory held a database: starting over would lose every click, conversion and API key. Restore the file from a backup, or run with --init to start an empty database here",
            db.display(),
            secrets.display()
        );
    }
    if (db_held || any_secret) && !present.iter().all(|p| *p) {
        let missing: Vec<String> = secret_files
            .iter()
            .zip(&present)
            .filter(|(_, p)| !**p)
            .map(|(f, _)| secrets.join(f).display().to_string())
            .collect();
        bail!(
            "{} is missing from a data directory in use: a new one would end every attribution cookie, visitor cookie, session and magic link (and on several nodes give this node keys of its own). Restore it from a backup or another node, or run with --init to make a new one",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// The key `clickward import` hashes IP rows under (`import.key`, 32 random
/// bytes, 0600), made at the first import. It is what lets imports dedup
/// against each other across runs; no IP is stored, but whoever holds this
/// file and the database could test a guessed (IP, user agent) against the
/// imported keys, so deleting it unlinks them for good (later imports then
/// no longer dedup against earlier ones).
///
/// # Errors
/// When the file cannot be made or read, or is short.
pub fn import_key(dir: &Path) -> anyhow::Result<[u8; 32]> {
    ensure_private_dir(dir)?;
    let path = dir.join("import.key");
    if !path.exists() {
        let mut key = [0u8; 32];
        rand::fill(&mut key[..]);
        write_private(&path, &key)?;
    }
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let key: [u8; 32] = bytes.get(..32).and_then(|b| b.try_into().ok()).with_context(|| {
        format!(
            "{} holds {} bytes; an import key needs 32 (delete it to make a new one: later imports then no longer dedup against earlier ones)",
            path.display(),
            bytes.len()
        )
    })?;
    Ok(key)
}

/// The visitor-key salts, one per UTC day.
pub struct Salts {
    path: PathBuf,
    keep: usize,
    days: RwLock<BTreeMap<i64, Salt>>,
}

impl Salts {
    /// Loads the salt file (or starts empty), keeping enough days for a
    /// dedup window of `window` µs.
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn load(dir: &Path, window: Micros) -> anyhow::Result<Self> {
        ensure_private_dir(dir)?;
        let path = dir.join("visitor-salts.json");
        let days = if path.exists() {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let raw: BTreeMap<i64, String> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a salt file", path.display()))?;
            raw.into_iter()
                .filter_map(|(d, hex)| {
                    let v = hex::decode(hex).ok()?;
                    let s: Salt = v.try_into().ok()?;
                    Some((d, s))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            path,
            keep: dedup::salts_to_keep(window),
            days: RwLock::new(days),
        })
    }

    /// The salt of `day` if it is still kept.
    fn get(&self, day: i64) -> Option<Salt> {
        self.days.read().ok()?.get(&day).copied()
    }

    /// The salt of `day`, creating (and persisting) it if missing, and
    /// forgetting salts no dedup window can reach any more.
    fn get_or_create(&self, day: i64) -> anyhow::Result<Salt> {
        if let Some(s) = self.get(day) {
            return Ok(s);
        }
        let mut days = self
            .days
            .write()
            .map_err(|_| anyhow::anyhow!("salt lock poisoned"))?;
        if let Some(s) = days.get(&day) {
            return Ok(*s);
        }
        let mut salt = [0u8; 32];
        rand::fill(&mut salt[..]);
        days.insert(day, salt);
        if self.keep != usize::MAX {
            let newest = days.keys().next_back().copied().unwrap_or(day);
            let keep = i64::try_from(self.keep).unwrap_or(i64::MAX);
            days.retain(|d, _| *d > newest.saturating_sub(keep));
        }
        self.save(&days)?;
        Ok(salt)
    }

    /// Agrees with the other nodes sharing `store` on the salts of `today`
    /// and `today + 1` (offering this node's own, or new ones), so every
    /// node computes the same visitor key. Run at start and every minute,
    /// the next day's salt is in place before midnight. A no-op on SQLite.
    ///
    /// # Errors
    /// When the shared store cannot be reached or the salt file written.
    pub async fn sync_shared(
        &self,
        store: &dyn clickward_store::Store,
        today: i64,
    ) -> anyhow::Result<()> {
        let keep = i64::try_from(self.keep).unwrap_or(i64::MAX);
        for day in [today, today + 1] {
            let candidate = match self.get(day) {
                Some(s) => s,
                None => {
                    let mut s = [0u8; 32];
                    rand::fill(&mut s[..]);
                    s
                }
            };
            let Some(shared) = store
                .shared_salt(day, candidate, today.saturating_sub(keep) + 1)
                .await?
            else {
                return Ok(());
            };
            if self.get(day) != Some(shared) {
                self.set(day, shared, today)?;
            }
        }
        Ok(())
    }

    /// Sets the salt of `day` (and persists), forgetting days before the
    /// oldest one a window ending `today` reaches.
    fn set(&self, day: i64, salt: Salt, today: i64) -> anyhow::Result<()> {
        let mut days = self
            .days
            .write()
            .map_err(|_| anyhow::anyhow!("salt lock poisoned"))?;
        days.insert(day, salt);
        let keep = i64::try_from(self.keep).unwrap_or(i64::MAX);
        days.retain(|d, _| *d > today.saturating_sub(keep));
        self.save(&days)
    }

    /// Writes the kept salts to the salt file (0600).
    fn save(&self, days: &BTreeMap<i64, Salt>) -> anyhow::Result<()> {
        let text: BTreeMap<i64, String> = days.iter().map(|(d, s)| (*d, hex::encode(s))).collect();
        write_private(&self.path, serde_json::to_string(&text)?.as_bytes())
    }

    /// The visitor key of `(ip, ua)` for a click at `ts`, and the keys the
    /// same visitor had under the earlier salts the dedup window reaches.
    ///
    /// # Errors
    /// When a new day's salt cannot be persisted.
    pub fn keys_for(
        &self,
        ts: Micros,
        window: Micros,
        ip: IpAddr,
        ua: &[u8],
    ) -> anyhow::Result<(VisitorKey, Vec<VisitorKey>)> {
        let today = utc_day(ts);
        let key = visitor_key(&self.get_or_create(today)?, ip, ua);
        let previous = dedup::salt_days(ts, window)
            .filter(|d| *d != today)
            .filter_map(|d| self.get(d))
            .map(|s| visitor_key(&s, ip, ua))
            .collect();
        Ok((key, previous))
    }

    /// The shared rate limiter's key of client `ip` at `ts`: a keyed hash
    /// of the address under a key derived from the UTC day's salt, so every
    /// node computes the same key, it changes every day, and no address is
    /// stored (docs/fraud.md, "Rate limits").
    ///
    /// # Errors
    /// When a new day's salt cannot be persisted.
    pub fn limiter_key(&self, ts: Micros, ip: IpAddr) -> anyhow::Result<[u8; 16]> {
        let salt = self.get_or_create(utc_day(ts))?;
        let key = blake3::derive_key("clickward shared rate limiter client key v1", &salt);
        Ok(crate::services::fraud::address_hash(&key, ip))
    }

    /// Days whose salts are currently kept (for tests and `/readyz`).
    pub fn kept_days(&self) -> Vec<i64> {
        self.days
            .read()
            .map(|d| d.keys().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickward_core::MICROS_PER_DAY;

    #[test]
    fn salts_rotate_and_old_ones_are_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let window = MICROS_PER_DAY;
        let s = Salts::load(dir.path(), window).unwrap();
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let (k1, prev) = s
            .keys_for(10 * MICROS_PER_DAY + 5, window, ip, b"ua")
            .unwrap();
        assert!(prev.is_empty());
        let (k2, prev) = s
            .keys_for(11 * MICROS_PER_DAY + 5, window, ip, b"ua")
            .unwrap();
        assert_ne!(k1, k2);
        assert_eq!(prev, vec![k1]);
        s.keys_for(12 * MICROS_PER_DAY + 5, window, ip, b"ua")
            .unwrap();
        assert_eq!(s.kept_days(), vec![11, 12]);
        // The file holds exactly the kept days, and is private.
        let reloaded = Salts::load(dir.path(), window).unwrap();
        assert_eq!(reloaded.kept_days(), vec![11, 12]);
        let mode = fs::metadata(dir.path().join("visitor-salts.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
