//! Who can log in: an htpasswd file of bcrypt hashes (`htpasswd -B`, `berth hash-password`).
//!
//! Operators edit the file while berth runs, so each verification first compares the file's
//! modification time and size with what was last read (one `stat`) and re-reads it when they
//! differ. A file that cannot be read fails closed: nobody is authenticated until it can be,
//! because an operator emptying or removing it is more likely than a transient fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use super::AuthError;

/// Cost of hashes berth writes: ~50 ms per login on current hardware. The library default
/// (12) is four times that, paid by every `docker login` and every token request with Basic
/// credentials.
pub const HASH_COST: u32 = 10;

/// A bcrypt hash of the given password (for the CLI).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    bcrypt::hash(password, HASH_COST).map_err(|e| AuthError::Crypto(format!("bcrypt: {e}")))
}

#[derive(Debug)]
pub struct Htpasswd {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// (mtime, size, inode) of the file as last read.
    stamp: Option<(SystemTime, u64, u64)>,
    users: HashMap<String, String>,
    /// Counts the reads of the file: what was verified against one may not hold for the next.
    generation: u64,
}

/// One user's line as the file has it now.
#[derive(Debug, Clone)]
pub struct Entry {
    pub generation: u64,
    /// `None` for a user the file does not have.
    pub hash: Option<String>,
}

/// Whether `password` matches `hash`. Runs bcrypt (tens of milliseconds) even without a hash
/// (an unknown user), so response times do not tell which user names exist.
pub fn check_password(password: &str, hash: Option<&str>) -> bool {
    match hash {
        Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        None => {
            let _ = bcrypt::verify(password, dummy_hash());
            false
        }
    }
}

impl Htpasswd {
    /// Reads the file now, so that a missing or unreadable file stops startup.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let htpasswd = Htpasswd {
            path: path.to_path_buf(),
            state: Mutex::new(State::default()),
        };
        htpasswd.current_hash("")?;
        Ok(htpasswd)
    }

    /// Whether `password` is `user`'s. Runs bcrypt (tens of milliseconds): call it off the
    /// async executor.
    pub fn verify(&self, user: &str, password: &str) -> Result<bool, AuthError> {
        Ok(check_password(password, self.entry(user)?.hash.as_deref()))
    }

    /// Whether `user` is (still) in the file.
    pub fn contains(&self, user: &str) -> Result<bool, AuthError> {
        Ok(self.current_hash(user)?.is_some())
    }

    /// Whether `user` was in the file when it was last read, without looking at the file
    /// again (no I/O: fine on the async executor, right after a check that read it).
    pub fn knew(&self, user: &str) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.users.contains_key(user)
    }

    /// `user`'s hash as the file has it now, and which version of the file that is. Costs a
    /// `stat` (and a read when the file changed): call it off the async executor.
    pub fn entry(&self, user: &str) -> Result<Entry, AuthError> {
        let (hash, generation) = self.current(user)?;
        Ok(Entry { generation, hash })
    }

    fn current_hash(&self, user: &str) -> Result<Option<String>, AuthError> {
        Ok(self.current(user)?.0)
    }

    /// `user`'s hash from the file as it is now, re-reading it when it changed, and the
    /// file's generation.
    fn current(&self, user: &str) -> Result<(Option<String>, u64), AuthError> {
        let io = |source| AuthError::Io {
            path: self.path.clone(),
            source,
        };
        let metadata = std::fs::metadata(&self.path).map_err(io)?;
        // The inode too: a password changed for one of the same length, by a tool that
        // writes a new file and renames it, within the timestamp's granularity.
        let stamp = (
            metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            metadata.len(),
            std::os::unix::fs::MetadataExt::ino(&metadata),
        );
        // A poisoned lock only means another thread panicked mid-read; the table it left is
        // replaced below whenever the stamp differs, and is whole otherwise.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.stamp != Some(stamp) {
            let text = std::fs::read_to_string(&self.path).map_err(io)?;
            state.users = parse(&text, &self.path);
            state.stamp = Some(stamp);
            state.generation += 1;
            tracing::info!(path = %self.path.display(), users = state.users.len(), "htpasswd loaded");
        }
        Ok((state.users.get(user).cloned(), state.generation))
    }
}

/// `user:hash` lines; `#` comments and blank lines are skipped, as are hashes bcrypt cannot
/// check (MD5, SHA1, crypt), with a warning, so that those users simply cannot log in.
fn parse(text: &str, path: &Path) -> HashMap<String, String> {
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            tracing::warn!(path = %path.display(), line = number + 1, "htpasswd: line without ':' ignored");
            continue;
        };
        if !["$2y$", "$2b$", "$2a$", "$2x$"]
            .iter()
            .any(|prefix| hash.starts_with(prefix))
        {
            tracing::warn!(path = %path.display(), line = number + 1, user, "htpasswd: not a bcrypt hash (use htpasswd -B); user ignored");
            continue;
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    users
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| bcrypt::hash("berth-no-such-user", HASH_COST).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Low-cost hashes keep the tests fast; the cost does not change what is checked.
    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    fn write(file: &Path, text: &str) {
        let mut f = std::fs::File::create(file).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn verifies_bcrypt_lines_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        // htpasswd writes $2y$; bcrypt libraries write $2b$: both must work.
        let alice = hash("wonderland").replacen("$2b$", "$2y$", 1);
        write(
            &file,
            &format!(
                "# users\n\nalice:{alice}\nbob:{}\nmd5:$apr1$abc$def\nbroken line\n",
                hash("builder")
            ),
        );
        let users = Htpasswd::open(&file).unwrap();
        assert!(users.verify("alice", "wonderland").unwrap());
        assert!(!users.verify("alice", "Wonderland").unwrap());
        assert!(users.verify("bob", "builder").unwrap());
        assert!(!users.verify("md5", "anything").unwrap());
        assert!(!users.verify("nobody", "wonderland").unwrap());
        assert!(users.contains("bob").unwrap());
        assert!(!users.contains("md5").unwrap());
    }

    #[test]
    fn changes_are_picked_up_and_missing_files_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("htpasswd");
        write(&file, &format!("alice:{}\n", hash("one")));
        let users = Htpasswd::open(&file).unwrap();
        assert!(users.verify("alice", "one").unwrap());
        let first = users.entry("alice").unwrap();
        assert_eq!(users.entry("alice").unwrap().generation, first.generation);

        // A different size is noticed even within the file system's timestamp resolution.
        write(
            &file,
            &format!("alice:{}\ncarol:{}\n", hash("two"), hash("three")),
        );
        assert!(!users.verify("alice", "one").unwrap());
        assert!(users.verify("alice", "two").unwrap());
        assert!(users.verify("carol", "three").unwrap());
        let second = users.entry("alice").unwrap();
        assert!(second.generation > first.generation);
        assert_ne!(second.hash, first.hash);
        assert!(users.entry("nobody").unwrap().hash.is_none());

        // A same-size file put in place by a rename is noticed too.
        let replacement = dir.path().join("htpasswd.new");
        write(
            &replacement,
            &format!(
                "alice:{}
carol:{}
",
                hash("2wo"),
                hash("three")
            ),
        );
        std::fs::rename(&replacement, &file).unwrap();
        assert!(users.verify("alice", "2wo").unwrap());

        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            users.verify("alice", "two"),
            Err(AuthError::Io { .. })
        ));
        assert!(Htpasswd::open(&file).is_err());
    }

    #[test]
    fn hash_password_output_verifies() {
        let hashed = hash_password("s3cret").unwrap();
        assert!(hashed.starts_with("$2b$10$"));
        assert!(bcrypt::verify("s3cret", &hashed).unwrap());
    }
}
