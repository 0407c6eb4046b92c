//! What an HTTP/2 client may conclude from a failed stream.

/// Whether the server said it never processed the stream (RFC 9113 §8.7): it refused it
/// (REFUSED_STREAM), or a graceful GOAWAY's last stream id is below it (h2 fails exactly
/// those streams with the GOAWAY's own error, NO_ERROR). Such a request may be sent again,
/// whatever it does; any other failure after the request left may have been applied.
pub fn never_processed(e: &h2::Error) -> bool {
    let refused = e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM);
    let graceful_go_away = e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR);
    e.is_remote() && (refused || graceful_go_away)
}
