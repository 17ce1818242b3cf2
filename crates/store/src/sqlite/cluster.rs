//! SQLite has no other nodes: the cluster methods keep their defaults
//! (the salt file is the truth; other processes are seen through
//! `catalog_version`).

use super::SqliteStore;
use crate::ClusterStore;

impl ClusterStore for SqliteStore {}
