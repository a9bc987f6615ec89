//! Who owns the files a draft changes, from the repository's CODEOWNERS file, as GitHub
//! reads it: each line is a pattern (gitignore-style) and its owners (`@login`,
//! `@org/team`; e-mail addresses cannot be asked to review and are skipped); the last
//! line whose pattern matches a path decides its owners, and a matching line without
//! owners leaves the path unowned. Pure: the drafter reads the file and asks here.

use globset::{GlobBuilder, GlobMatcher};

/// Where GitHub looks for the file, in its order.
pub const LOCATIONS: [&str; 3] = [".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"];

/// One line of the file.
#[derive(Debug, Clone)]
struct Rule {
    matchers: Vec<GlobMatcher>,
    owners: Vec<String>,
}

/// The rules of one CODEOWNERS file.
#[derive(Debug, Clone, Default)]
pub struct CodeOwners {
    rules: Vec<Rule>,
}

impl CodeOwners {
    /// Reads the file; lines that cannot be understood are skipped, as GitHub does (it
    /// marks them as errors in its UI and ignores them).
    pub fn parse(text: &str) -> CodeOwners {
        let rules = text
            .lines()
            .filter_map(|line| {
                let line = line.split_once(" #").map_or(line, |(l, _)| l).trim();
                if line.is_empty() || line.starts_with('#') {
                    return None;
                }
                let mut words = line.split_whitespace();
                let pattern = words.next()?;
                let owners = words.filter(|w| w.starts_with('@')).map(|w| w[1..].to_string()).collect();
                Some(Rule { matchers: matchers(pattern)?, owners })
            })
            .collect();
        CodeOwners { rules }
    }

    /// The owners of `path` (relative to the repository's root, without a leading `/`).
    pub fn owners_of(&self, path: &str) -> &[String] {
        self.rules
            .iter()
            .rev()
            .find(|r| r.matchers.iter().any(|m| m.is_match(path)))
            .map_or(&[], |r| r.owners.as_slice())
    }

    /// The owners of any of `paths`, in first-seen order, without those in `exclude`
    /// (compared without regard to case, as GitHub logins are).
    pub fn reviewers<'a>(&self, paths: impl IntoIterator<Item = &'a str>, exclude: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for path in paths {
            for owner in self.owners_of(path) {
                let excluded = exclude.iter().any(|e| e.eq_ignore_ascii_case(owner));
                if !excluded && !out.iter().any(|o| o.eq_ignore_ascii_case(owner)) {
                    out.push(owner.clone());
                }
            }
        }
        out
    }
}

/// A CODEOWNERS pattern as globs over repository paths: anchored at the root when it
/// starts with or contains a `/` (other than a trailing one), at any depth otherwise;
/// and matching everything beneath what it names, since a directory's owners own its
/// files.
fn matchers(pattern: &str) -> Option<Vec<GlobMatcher>> {
    let dir_only = pattern.ends_with('/');
    let trimmed = pattern.trim_end_matches('/');
    let anchored = trimmed.starts_with('/') || trimmed.contains('/');
    let body = trimmed.trim_start_matches('/');
    if body.is_empty() {
        return None;
    }
    let base = if anchored || body.starts_with("**") { body.to_string() } else { format!("**/{body}") };
    let mut globs = vec![format!("{base}/**")];
    if !dir_only {
        globs.push(base);
    }
    globs
        .iter()
        // `*` stays within one path segment, as in gitignore.
        .map(|g| GlobBuilder::new(g).literal_separator(true).build().map(|g| g.compile_matcher()))
        .collect::<Result<Vec<_>, _>>()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# Everything, unless a later line says otherwise.
*                    @acme/platform
*.conf               @carol
/jobs/               @acme/spark-owners @dave
/jobs/etl/           @erin  # the ETL team
docs/                @writers
jobs/legacy/old.conf
apps/**/secrets      security@example.com
";

    #[test]
    fn the_last_matching_line_decides() {
        let owners = CodeOwners::parse(FILE);
        assert_eq!(owners.owners_of("README.md"), ["acme/platform"]);
        assert_eq!(owners.owners_of("conf/app.conf"), ["carol"], "unanchored: at any depth");
        assert_eq!(owners.owners_of("jobs/etl/spark-defaults.conf"), ["erin"]);
        assert_eq!(owners.owners_of("jobs/orders/spark-defaults.conf"), ["acme/spark-owners", "dave"]);
        assert_eq!(owners.owners_of("src/docs/x.md"), ["writers"], "a directory at any depth");
        assert!(owners.owners_of("jobs/legacy/old.conf").is_empty(), "a line without owners unowns");
        assert!(owners.owners_of("apps/a/b/secrets").is_empty(), "e-mail owners cannot review");
        assert_eq!(owners.owners_of("other/jobs/x"), ["acme/platform"], "`/jobs/` is anchored");
    }

    #[test]
    fn reviewers_of_a_change_are_its_files_owners_without_the_excluded() {
        let owners = CodeOwners::parse(FILE);
        let paths = ["jobs/orders/a.conf", "jobs/etl/b.conf", "jobs/orders/c.conf"];
        assert_eq!(owners.reviewers(paths, &["DAVE"]), ["acme/spark-owners", "erin"]);
        assert!(CodeOwners::parse("").reviewers(paths, &[]).is_empty());
        assert!(CodeOwners::parse("/ @x\n").reviewers(["a"], &[]).is_empty(), "a bare `/` names nothing");
    }
}
