//! The `uploads` tree: blob uploads in progress, keyed by upload id, valued [`UploadRecord`].

use serde::{Deserialize, Serialize};

use super::{decode, encode, text_keyed, Index, IndexError};

/// A blob upload in progress; its bytes are in `uploads/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub repo: String,
    pub started_ms: u64,
}

impl Index {
    pub fn put_upload(&self, id: &str, record: &UploadRecord) -> Result<(), IndexError> {
        self.uploads.insert(id.as_bytes(), encode(record))?;
        Ok(())
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>, IndexError> {
        self.uploads
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    pub fn remove_upload(&self, id: &str) -> Result<(), IndexError> {
        self.uploads.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn uploads(&self) -> Result<Vec<(String, UploadRecord)>, IndexError> {
        text_keyed(&self.uploads)
    }
}
