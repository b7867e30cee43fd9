//! `Range: bytes=…` for blob downloads. One range is honoured; a multi-range request gets the
//! whole blob (RFC 9110 lets a server ignore ranges it does not want to serve).

/// What the client asked for, against a blob of known size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    /// Bytes `start..=end`.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match last.parse::<u64>() {
            Ok(0) | Err(_) => None,
            Ok(n) => Some((size.saturating_sub(n), size.saturating_sub(1))),
        },
        (false, true) => first.parse().ok().map(|s| (s, size.saturating_sub(1))),
        (false, false) => match (first.parse::<u64>(), last.parse::<u64>()) {
            (Ok(s), Ok(e)) if s <= e => Some((s, e.min(size.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        Some((start, end)) if size > 0 && start < size => RangeRequest::Partial { start, end },
        _ => RangeRequest::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn ranges() {
        assert_eq!(parse(None, 10), Full);
        assert_eq!(parse(Some("items=0-1"), 10), Full);
        assert_eq!(parse(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse(Some("bytes=0-3"), 10), Partial { start: 0, end: 3 });
        assert_eq!(parse(Some("bytes=5-"), 10), Partial { start: 5, end: 9 });
        assert_eq!(parse(Some("bytes=-3"), 10), Partial { start: 7, end: 9 });
        assert_eq!(parse(Some("bytes=-30"), 10), Partial { start: 0, end: 9 });
        assert_eq!(parse(Some("bytes=8-100"), 10), Partial { start: 8, end: 9 });
        assert_eq!(parse(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=4-2"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=x-1"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-0"), 0), Unsatisfiable);
    }
}
