//! The query-string flags rqlite clients send, and the `X-Request-Id` header.
//!
//! Parsing never fails: a flag is only checked by the handler that uses it
//! ([`Flags::read_level`], [`Flags::write_options`]), so that, say, a proxy's
//! `X-Request-Id` cannot break `/status`, and flags an endpoint does not use
//! are ignored as rqlite ignores them.

use crate::db::{ReadOptions, WriteOptions};
use crate::error::ApiError;
use crate::render::Shape;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Uri};
use paxsql_types::{ReadLevel, RequestId};

/// The header a client may name a write with, instead of `request_id=`.
const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the query string (and headers) ask for.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flags {
    pub(crate) transaction: bool,
    pub(crate) timings: bool,
    pub(crate) pretty: bool,
    pub(crate) associative: bool,
    pub(crate) blob_array: bool,
    pub(crate) noleader: bool,
    pub(crate) queue: bool,
    /// `level=` as given; `None` when absent.
    level: Option<String>,
    /// `timeout=` as given (rqlite's duration, e.g. `2s`, `500ms`).
    timeout: Option<String>,
    /// `request_id=` as given.
    request_id: Option<String>,
    /// The `X-Request-Id` header as given.
    request_id_header: Option<HeaderValue>,
    /// The statement of `GET /db/query?q=`.
    pub(crate) q: Option<String>,
}

impl Flags {
    /// Reads the flags; the last of a repeated flag wins.
    pub(crate) fn parse(uri: &Uri, headers: &HeaderMap) -> Flags {
        // Decoding `application/x-www-form-urlencoded` into strings cannot fail.
        let pairs = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|Query(pairs)| pairs)
            .unwrap_or_default();
        let mut flags = Flags {
            request_id_header: headers.get(REQUEST_ID_HEADER).cloned(),
            ..Flags::default()
        };
        for (key, value) in pairs {
            match key.as_str() {
                "transaction" => flags.transaction = is_on(&value),
                "timings" => flags.timings = is_on(&value),
                "pretty" => flags.pretty = is_on(&value),
                "associative" => flags.associative = is_on(&value),
                "blob_array" => flags.blob_array = is_on(&value),
                "noleader" => flags.noleader = is_on(&value),
                "queue" => flags.queue = is_on(&value),
                "level" => flags.level = Some(value),
                "timeout" => flags.timeout = Some(value),
                "request_id" => flags.request_id = Some(value),
                "q" => flags.q = Some(value),
                // rqlite's flags that only tune how rqlite itself serves a
                // request (redirect, freshness, timeout, ...) and unknown ones.
                _ => {}
            }
        }
        flags
    }

    /// How results are to be shaped.
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            associative: self.associative,
            blob_array: self.blob_array,
        }
    }

    /// The read level asked for; `linearizable` when none is given.
    pub(crate) fn read_level(&self) -> Result<ReadLevel, ApiError> {
        match self.level.as_deref() {
            None | Some("") => Ok(ReadLevel::Linearizable),
            // rqlite's `auto` is `weak` on voting nodes, and every paxsql node votes.
            Some(s) if s.eq_ignore_ascii_case("auto") => Ok(ReadLevel::Leader),
            Some(s) => ReadLevel::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown read level {s:?}: use local, leader or linearizable \
                     (rqlite's none, weak, strong and auto are accepted too)"
                ))
            }),
        }
    }

    /// The read level and time limit asked for; a limit above `max` (the
    /// HTTP request timeout) is refused, as the request would end first.
    pub(crate) fn read_options(&self, max: std::time::Duration) -> Result<ReadOptions, ApiError> {
        let level = self.read_level()?;
        let timeout = match self.timeout.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => {
                let d = humantime::parse_duration(raw).map_err(|e| {
                    ApiError::bad_request(format!(
                        "timeout={raw:?} is not a duration ({e}): use e.g. 500ms, 2s or 1m"
                    ))
                })?;
                if d.is_zero() || d > max {
                    return Err(ApiError::bad_request(format!(
                        "timeout={raw} is out of range: more than 0 and at most {}s",
                        max.as_secs()
                    )));
                }
                Some(d)
            }
        };
        Ok(ReadOptions { level, timeout })
    }

    /// How a write is to be carried out.
    pub(crate) fn write_options(&self) -> Result<WriteOptions, ApiError> {
        if self.queue {
            return Err(ApiError::bad_request(
                "queued writes (queue) are not supported: drop the flag and the write \
                 is answered once it is committed",
            ));
        }
        Ok(WriteOptions {
            transaction: self.transaction,
            request_id: self.request_id()?,
        })
    }

    /// The client's id for a write: the query parameter, else the header.
    fn request_id(&self) -> Result<Option<RequestId>, ApiError> {
        let raw = match (&self.request_id, &self.request_id_header) {
            (Some(id), _) => id.as_str(),
            (None, Some(header)) => header.to_str().map_err(|_| {
                ApiError::bad_request("X-Request-Id header must be printable ASCII")
            })?,
            (None, None) => return Ok(None),
        };
        RequestId::parse(raw)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("bad request id: {e}")))
    }
}

/// A flag is on when present, bare (`?pretty`) or with any value but an
/// explicit no.
fn is_on(value: &str) -> bool {
    !["false", "0", "no", "off"]
        .iter()
        .any(|no| value.eq_ignore_ascii_case(no))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(query: &str) -> Flags {
        let uri: Uri = format!("/db/query?{query}").parse().unwrap();
        Flags::parse(&uri, &HeaderMap::new())
    }

    #[test]
    fn bare_flags_are_on_and_explicit_no_is_off() {
        assert!(flags("pretty").pretty);
        assert!(flags("pretty=").pretty);
        assert!(flags("pretty=true").pretty);
        assert!(flags("pretty=1").pretty);
        for no in ["false", "FALSE", "0", "no", "off"] {
            assert!(!flags(&format!("pretty={no}")).pretty, "{no}");
        }
        assert!(!flags("").pretty);
    }

    #[test]
    fn last_repeated_flag_wins() {
        assert!(!flags("timings&timings=false").timings);
        assert_eq!(flags("q=a&q=b").q.as_deref(), Some("b"));
    }

    #[test]
    fn query_parameter_is_percent_decoded() {
        assert_eq!(
            flags("q=SELECT%20*%20FROM%20t+WHERE%20a%3D1").q.as_deref(),
            Some("SELECT * FROM t WHERE a=1")
        );
    }

    #[test]
    fn empty_level_is_the_default() {
        assert_eq!(
            flags("level=").read_level().unwrap(),
            ReadLevel::Linearizable
        );
    }
}
