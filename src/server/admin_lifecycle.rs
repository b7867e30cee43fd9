//! How `berth retention` and `berth repo rm` print their answers.

use crate::registry::private::retention::RetentionReport;
use crate::storage::index::RemovedRepository;

pub fn format_retention(report: &RetentionReport) -> String {
    let verb = match report.dry_run {
        true => "would delete",
        false => "deleted",
    };
    let mut out = String::new();
    for removal in &report.removals {
        let what = match &removal.tag {
            Some(tag) => format!("{}:{tag} ({})", removal.repository, removal.digest),
            None => format!("{}@{}", removal.repository, removal.digest),
        };
        out += &format!("{verb} {what}: {}\n", removal.reason);
    }
    let tags = report.removals.iter().filter(|r| r.tag.is_some()).count();
    out += &format!(
        "{verb} {tags} tag(s) and {} manifest(s) in {} repositories with retention rules{}\n",
        report.removals.len() - tags,
        report.repositories,
        match report.dry_run {
            true => " (dry run: nothing was changed)",
            false => "; berth gc reclaims the bytes",
        }
    );
    out
}

pub fn format_removed_repository(name: &str, removed: &RemovedRepository) -> String {
    format!(
        "deleted repository {name}: {} tag(s), {} manifest(s), {} blob link(s), {} referrer record(s); berth gc reclaims the bytes\n",
        removed.tags, removed.manifests, removed.blob_links, removed.referrers
    )
}
