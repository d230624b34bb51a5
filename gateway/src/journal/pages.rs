//! A Redis stream read in pages, for the passes that must read a whole
//! stream (erasure of the order stream and of the webhook streams).

use redis::aio::ConnectionLike;

/// Entries read per `XRANGE` while looking for a buyer's.
pub const ERASE_SCAN_COUNT: usize = 1_000;

/// A stream read in pages of [`ERASE_SCAN_COUNT`] entries, oldest first
/// (erasure reads whole streams; each is bounded by its own limit).
#[derive(Debug)]
pub struct StreamPages<'k> {
    key: &'k str,
    /// Where the next page starts (`None`: the stream was read to its end).
    start: Option<String>,
}

impl<'k> StreamPages<'k> {
    pub fn new(key: &'k str) -> Self {
        Self {
            key,
            start: Some("-".to_string()),
        }
    }

    /// The next page, or `None` past the end. Entries added behind the
    /// reader meanwhile are read too.
    pub async fn next<C: ConnectionLike + Send>(
        &mut self,
        conn: &mut C,
    ) -> redis::RedisResult<Option<Vec<redis::streams::StreamId>>> {
        let Some(start) = self.start.take() else {
            return Ok(None);
        };
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(ERASE_SCAN_COUNT)
            .query_async(conn)
            .await?;
        if page.ids.len() == ERASE_SCAN_COUNT {
            let last = &page.ids[ERASE_SCAN_COUNT - 1].id;
            self.start = Some(format!("({last}"));
        }
        Ok((!page.ids.is_empty()).then_some(page.ids))
    }
}
