//! `[storage]`: where data lives, and the memory and disk budgets.

use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use super::{ConfigError, Secret};

/// Less memory than this for hot manifests would not hold one the size the spec allows.
const MIN_MEMORY_CACHE: u64 = 8 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    /// Memory for hot manifests and tag answers, in bytes.
    #[serde(default = "default_memory_cache")]
    pub memory_cache: ByteSize,
    /// The count-bounded predecessor of `memory_cache`: still read, so that existing files
    /// load, but ignored (a count is no bound on memory); berth warns when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_cache_entries: Option<u64>,
    /// Disk budget for cached content; `None` is unlimited.
    #[serde(default)]
    pub max_size: ByteSize,
    /// Eviction stops once the cache is down to this percentage of `max_size`.
    #[serde(default = "default_low_water")]
    pub low_water_percent: u8,
    /// The shared store every node uses, when present (`[storage.s3]`); `data_dir` is then the
    /// node's own tier in front of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Settings>,
}

/// `[storage.s3]`: an S3 bucket (AWS, MinIO, Ceph RGW, Garage), addressed path-style.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub endpoint: url::Url,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// Read into `secret_access_key` at load (trailing newline dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// A key prefix inside the bucket, so that one bucket can hold several registries.
    #[serde(default)]
    pub prefix: String,
    /// Hash every blob read straight from the bucket to a client, not only those filled into
    /// a node's tier. Off by default: berth writes a blob to the bucket only once verified, and
    /// trusts it there as it trusts its own disk (a local hit is not hashed either); a read
    /// always checks the object's size, so a cut object is never served whole.
    #[serde(default)]
    pub verify_reads: bool,
}

impl S3Settings {
    pub(super) fn resolve_secret_file(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.secret_access_key_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            self.secret_access_key = Some(Secret::new(text.trim_end_matches(['\r', '\n'])));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| ConfigError::Invalid(format!("storage.s3: {what}"));
        if !matches!(self.endpoint.scheme(), "http" | "https") {
            return Err(invalid("endpoint must be an http or https URL"));
        }
        if self.bucket.is_empty() {
            return Err(invalid("bucket must not be empty"));
        }
        if self.access_key_id.is_empty() {
            return Err(invalid("access_key_id must not be empty"));
        }
        if self.secret_access_key.is_none() {
            return Err(invalid(
                "secret_access_key or secret_access_key_file is required",
            ));
        }
        if self.prefix.starts_with('/') || self.prefix.contains("//") {
            return Err(invalid(
                "prefix must be a relative key prefix like \"berth/\"",
            ));
        }
        Ok(())
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

impl StorageSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self
            .memory_cache
            .0
            .is_none_or(|bytes| bytes < MIN_MEMORY_CACHE)
        {
            return Err(ConfigError::Invalid(format!(
                "storage.memory_cache must be a size of at least {MIN_MEMORY_CACHE} bytes"
            )));
        }
        if !(1..=100).contains(&self.low_water_percent) {
            return Err(ConfigError::Invalid(
                "storage.low_water_percent must be between 1 and 100".into(),
            ));
        }
        if let Some(s3) = &self.s3 {
            s3.validate()?;
        }
        Ok(())
    }
}

fn default_low_water() -> u8 {
    90
}
fn default_memory_cache() -> ByteSize {
    ByteSize(Some(64 << 20))
}

/// A size in bytes, written humanely (`"50GiB"`, `"512 MB"`, `1048576`), or `"unlimited"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSize(pub Option<u64>);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("unlimited") || text == "0" {
            return Ok(ByteSize(None));
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like \"50GiB\""))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000 * 1000 * 1000 * 1000,
            "tib" => 1 << 40,
            other => return Err(format!("unknown size unit {other:?} in {text:?}")),
        };
        Ok(ByteSize(Some((number * multiplier as f64) as u64)))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(0) => Ok(ByteSize(None)),
            Raw::Number(n) => Ok(ByteSize(Some(n))),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => serializer.serialize_str("unlimited"),
            Some(n) => serializer.serialize_u64(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::config::Settings;

    /// `[storage.s3]` from the file, `verify_reads` off unless said, and on from the environment.
    #[test]
    fn shared_store_reads_are_size_checked_unless_verify_reads() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let file = r#"
[storage.s3]
endpoint = "http://127.0.0.1:3900"
bucket = "berth"
access_key_id = "GK1"
secret_access_key = "s"
"#;
        f.write_all(file.as_bytes()).unwrap();
        let s = Settings::load_with_env(Some(f.path()), Vec::new()).unwrap();
        assert!(!s.storage.s3.as_ref().unwrap().verify_reads);
        let env = vec![(
            "BERTH__STORAGE__S3__VERIFY_READS".to_string(),
            "true".to_string(),
        )];
        let s = Settings::load_with_env(Some(f.path()), env).unwrap();
        assert!(s.storage.s3.as_ref().unwrap().verify_reads);
    }
}
