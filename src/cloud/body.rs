//! Reading HTTP bodies with a cap: an answer is read chunk by chunk and
//! refused once it passes the limit, so a hostile or broken server (or a
//! network path that is not fully trusted) cannot make appsnap buffer
//! gigabytes. The caps are far above any real answer.

/// Cap of one ECS answer: a DescribeSnapshotGroups page of 100 groups of 128
/// disks is a few MiB.
pub const ECS_BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// Cap of one metadata answer: the largest, the role credentials, is ~2 KiB.
pub const IMDS_BODY_LIMIT: u64 = 64 * 1024;

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection failed mid-body.
    Transport(reqwest::Error),
    /// More than the limit (announced or sent); reading stopped there.
    TooLarge,
}

/// Reads the whole body, or stops with [`BodyError::TooLarge`] at `limit`.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
