//! The catalogue file: programs, affiliates and links declared in TOML,
//! applied at start and on SIGHUP under the ownership rule of
//! `clickward_core::link::Owner`: a declared entry is applied when its item
//! is new, or is the file's and the entry changed since it was last
//! applied; an item made or changed through the API, CLI or dashboard is
//! left as it is and reported as drifted. Items missing from the file are
//! left as they are (their clicks stay).
//!
//! The whole file is checked before anything is written, and applied in one
//! transaction: a typo changes nothing.

use std::collections::HashSet;
use std::path::Path;

use clickward_core::commission::CommissionPlan;
use clickward_core::id::{LinkCode, Slug};
use clickward_core::link::{Destination, RedirectStatus, Status, UtmDefaults};
use clickward_store::{AffiliateInput, CatalogInput, LinkInput, ProgramInput};
use serde::Deserialize;

use clickward_core::fraud::RuleSpec;

use crate::services::fraud::compile_in;
use crate::services::programs::{ProgramSpec, display_name};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    programs: Vec<ProgramSpec>,
    #[serde(default)]
    affiliates: Vec<AffiliateEntry>,
    #[serde(default)]
    links: Vec<LinkEntry>,
    #[serde(default)]
    commissions: Vec<CommissionEntry>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

/// A checked catalogue file: what the store applies in one transaction, and
/// its fraud rules (applied after it, all or none, under the same ownership
/// rule: a rule changed through the API, CLI or dashboard is left alone).
#[derive(Debug)]
pub struct Catalogue {
    /// Programs, affiliates, links, commission overrides.
    pub input: CatalogInput,
    /// `[[rules]]`.
    pub rules: Vec<RuleSpec>,
}

/// A per-affiliate commission plan: its event rates and default beat the
/// program's (see `clickward_core::commission::resolve`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommissionEntry {
    program: Slug,
    affiliate: Slug,
    commission: CommissionPlan,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AffiliateEntry {
    slug: Slug,
    name: Option<String>,
    #[serde(default)]
    status: Status,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkEntry {
    code: LinkCode,
    program: Slug,
    affiliate: Option<Slug>,
    destination: String,
    redirect: Option<RedirectStatus>,
    #[serde(default)]
    utm: UtmDefaults,
    #[serde(default)]
    status: Status,
}

/// A catalogue file that cannot be applied, with what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Unreadable file.
    #[error("catalogue {0}: {1}")]
    Read(String, std::io::Error),
    /// TOML syntax, unknown key, bad code or a 301/308 redirect.
    #[error("catalogue {0}: {1}")]
    Parse(String, String),
    /// Duplicates or a bad destination.
    #[error("catalogue {0}: {1}")]
    Invalid(String, String),
}

/// Reads and checks a catalogue file.
///
/// # Errors
/// [`CatalogError`] naming the file and the entry at fault: duplicate codes or
/// slugs, a link whose program or affiliate is not declared in the file, an
/// invalid destination, a permanent redirect, an unknown key.
pub fn load(path: &Path) -> Result<Catalogue, CatalogError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CatalogError::Read(name.clone(), e))?;
    parse(&name, &text)
}

/// Parses catalogue text (see [`load`]).
///
/// # Errors
/// As [`load`].
pub fn parse(name: &str, text: &str) -> Result<Catalogue, CatalogError> {
    let file: File =
        toml::from_str(text).map_err(|e| CatalogError::Parse(name.to_owned(), e.to_string()))?;
    let invalid = |msg: String| CatalogError::Invalid(name.to_owned(), msg);

    let mut programs = HashSet::new();
    let mut settings = Vec::new();
    for (i, p) in file.programs.iter().enumerate() {
        let Some(slug) = &p.slug else {
            return Err(invalid(format!("program #{} has no slug", i + 1)));
        };
        settings.push(
            p.new_settings()
                .map_err(|e| invalid(format!("program {:?}: {e}", slug.as_str())))?,
        );
        if !programs.insert(slug.clone()) {
            return Err(invalid(format!(
                "program {:?} is declared twice",
                slug.as_str()
            )));
        }
    }
    let mut affiliates = HashSet::new();
    for a in &file.affiliates {
        if !affiliates.insert(a.slug.clone()) {
            return Err(invalid(format!(
                "affiliate {:?} is declared twice",
                a.slug.as_str()
            )));
        }
    }
    let mut codes = HashSet::new();
    for l in &file.links {
        if !codes.insert(l.code.clone()) {
            return Err(invalid(format!(
                "link code {:?} is declared twice",
                l.code.as_str()
            )));
        }
        if !programs.contains(&l.program) {
            return Err(invalid(format!(
                "link {:?} names program {:?}, which is not declared in this file",
                l.code.as_str(),
                l.program.as_str()
            )));
        }
        if let Some(a) = l.affiliate.as_ref().filter(|a| !affiliates.contains(*a)) {
            return Err(invalid(format!(
                "link {:?} names affiliate {:?}, which is not declared in this file",
                l.code.as_str(),
                a.as_str()
            )));
        }
        Destination::compile(&l.destination, &l.utm)
            .map_err(|e| invalid(format!("link {:?}: {e}", l.code.as_str())))?;
    }

    for c in &file.commissions {
        if !programs.contains(&c.program) || !affiliates.contains(&c.affiliate) {
            return Err(invalid(format!(
                "commission for {:?} in {:?} names a program or affiliate not declared in this file",
                c.affiliate.as_str(),
                c.program.as_str()
            )));
        }
        c.commission
            .validate()
            .map_err(|e| invalid(format!("commission for {:?}: {e}", c.affiliate.as_str())))?;
    }

    let mut rule_ids = HashSet::new();
    for r in &file.rules {
        if !rule_ids.insert(r.id.clone()) {
            return Err(invalid(format!("rule {:?} is declared twice", r.id)));
        }
        if let Some(p) = r.program.as_deref()
            && !programs.iter().any(|s| s.as_str() == p.trim())
        {
            return Err(invalid(format!(
                "rule {:?} names program {p:?}, which is not declared in this file",
                r.id
            )));
        }
        if let Some(a) = r.affiliate.as_deref()
            && !affiliates.iter().any(|s| s.as_str() == a.trim())
        {
            return Err(invalid(format!(
                "rule {:?} names affiliate {a:?}, which is not declared in this file",
                r.id
            )));
        }
        // In the currency of every program it covers (payout caps).
        let covered: Vec<_> = file
            .programs
            .iter()
            .zip(&settings)
            .filter(|(p, _)| {
                r.program
                    .as_deref()
                    .is_none_or(|want| p.slug.as_ref().is_some_and(|s| s.as_str() == want.trim()))
            })
            .map(|(_, s)| s.currency)
            .collect();
        if covered.is_empty() {
            compile_in(
                r,
                clickward_core::money::Currency::parse("USD")
                    .map_err(|e| invalid(e.to_string()))?,
            )
            .map_err(|e| invalid(e.to_string()))?;
        }
        for currency in covered {
            compile_in(r, currency).map_err(|e| invalid(e.to_string()))?;
        }
    }

    let input = CatalogInput {
        commissions: file
            .commissions
            .into_iter()
            .map(|c| (c.program, c.affiliate, c.commission))
            .collect(),
        programs: file
            .programs
            .into_iter()
            .zip(settings)
            .filter_map(|(p, settings)| {
                let slug = p.slug?;
                Some(ProgramInput {
                    name: display_name(p.name.as_deref(), &slug),
                    slug,
                    status: p.status.unwrap_or_default(),
                    settings: Some(settings),
                })
            })
            .collect(),
        affiliates: file
            .affiliates
            .into_iter()
            .map(|a| AffiliateInput {
                name: a.name.unwrap_or_else(|| a.slug.to_string()),
                slug: a.slug,
                status: a.status,
            })
            .collect(),
        links: file
            .links
            .into_iter()
            .map(|l| LinkInput {
                code: l.code,
                program: l.program,
                affiliate: l.affiliate,
                destination: l.destination,
                redirect: l.redirect,
                utm: l.utm,
                status: l.status,
            })
            .collect(),
    };
    Ok(Catalogue {
        input,
        rules: file.rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[[programs]]
slug = "shop"
[[links]]
code = "a"
program = "shop"
destination = "https://shop.example/"
"#;

    #[test]
    fn the_seed_catalogue_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/links.toml");
        let cat = load(&path).unwrap();
        let codes: Vec<&str> = cat.input.links.iter().map(|l| l.code.as_str()).collect();
        for code in [
            "solare",
            "boardbrew",
            "wholefoods",
            "totalwine",
            "smallgoods",
            "puesto",
            "gbvintners",
            "rakuten_sim",
            "amazon_kindle",
            "a8_nisa",
        ] {
            assert!(codes.contains(&code), "seed catalogue lacks {code}");
        }
    }

    #[test]
    fn duplicate_codes_are_named() {
        let text = format!(
            "{OK}\n[[links]]\ncode = \"a\"\nprogram = \"shop\"\ndestination = \"https://x.example/\"\n"
        );
        let e = parse("t.toml", &text).unwrap_err().to_string();
        assert!(
            e.contains("\"a\" is declared twice") && e.contains("t.toml"),
            "{e}"
        );
    }

    #[test]
    fn permanent_redirects_and_typos_are_refused() {
        let e = parse("t.toml", &format!("{OK}redirect = 301\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("301"), "{e}");
        let e = parse("t.toml", &format!("{OK}destinaton = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("destinaton"), "{e}");
        let e = parse(
            "t.toml",
            &OK.replace("https://shop.example/", "https://{src}/"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("host"), "{e}");
        let e = parse(
            "t.toml",
            &OK.replace("program = \"shop\"", "program = \"nope\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nope"), "{e}");
    }
}
