//! Cutting a byte stream into KMIP messages: a tokio codec ([`KmipCodec`], for
//! `Framed` streams) and an async reader of one message at a time ([`MessageReader`], for
//! relays that read straight from a socket and must know how far a failed read got).
//!
//! The 8-byte header of each message is checked (Structure type, 8-aligned length, size
//! limit) before a single byte of the body is buffered, so an oversized or garbage header
//! is refused at once instead of making the reader wait for — or reserve — gigabytes.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::ttlv::{self, TtlvError, DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN};

/// Most bytes [`MessageReader::read`] reserves ahead of what has arrived.
const READ_CHUNK: usize = 16 * 1024;

/// Why a stream of KMIP messages cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("malformed message header: {0}")]
    Header(#[from] TtlvError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frames KMIP messages: decodes to the bytes of one whole message, encodes any bytes.
#[derive(Clone, Copy, Debug)]
pub struct KmipCodec {
    max_message_size: usize,
}

impl KmipCodec {
    pub fn new(max_message_size: usize) -> Self {
        Self { max_message_size }
    }
}

impl Default for KmipCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl Decoder for KmipCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(header);
        let size = ttlv::message_len(&h, self.max_message_size)?;
        if src.len() < size {
            // No reserve(size) here: buffers grow only as bytes actually arrive, so a peer
            // that announces 1 MiB and then stalls costs what it sent, not what it claimed.
            return Ok(None);
        }
        Ok(Some(src.split_to(size)))
    }
}

impl Encoder<Bytes> for KmipCodec {
    type Error = FrameError;
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

impl Encoder<Vec<u8>> for KmipCodec {
    type Error = FrameError;
    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// Why [`MessageReader`] could not read a whole message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream ended before the first byte of a message: the peer closed between
    /// messages.
    #[error("the stream ended between messages")]
    Closed,
    /// Reading failed, or the stream ended (`UnexpectedEof`), `received` bytes into the
    /// message (0: before its first byte).
    #[error("{error}")]
    Io {
        received: usize,
        error: std::io::Error,
    },
    /// The header announces a message larger than the limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The header is not that of a TTLV message (not a Structure, or a length that is not
    /// a multiple of 8).
    #[error(transparent)]
    Header(TtlvError),
}

impl ReadError {
    /// Whether no byte of the message had arrived: the stream ended or failed before it
    /// started. For a relay waiting for an answer, "no byte of an answer yet" (the request
    /// may be sent again under the retry rule) as opposed to "answer partly received".
    pub fn nothing_received(&self) -> bool {
        matches!(self, Self::Closed | Self::Io { received: 0, .. })
    }
}

/// Reads whole TTLV messages, one at a time, from an [`AsyncRead`], refusing a header that
/// announces more than the size limit before reading its body.
///
/// Three steps, so that a caller can time them apart (an idle timeout until a message
/// starts, a body timeout once it has): [`MessageReader::first_bytes`] waits for the start
/// of a message, [`MessageReader::header`] completes and checks its header,
/// [`MessageReader::read`] reads the rest (doing whatever steps are left). The header bytes
/// stay in the reader, so cancelling one of the first two steps loses nothing already read.
/// After a message is read the reader is ready for the next one.
#[derive(Debug, Clone)]
pub struct MessageReader {
    max_message_size: usize,
    header: [u8; HEADER_LEN],
    /// Header bytes of the current message read so far.
    received: usize,
}

impl MessageReader {
    pub fn new(max_message_size: usize) -> Self {
        Self {
            max_message_size,
            header: [0; HEADER_LEN],
            received: 0,
        }
    }

    /// Waits until some of the next message has arrived (at least one byte, at most its
    /// header). [`ReadError::Closed`] at the end of the stream.
    pub async fn first_bytes<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<(), ReadError> {
        if self.received == 0 {
            self.read_header_bytes(reader).await?;
        }
        Ok(())
    }

    /// Completes the header and checks it; returns the size of the whole message (header
    /// included).
    pub async fn header<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<usize, ReadError> {
        while self.received < HEADER_LEN {
            self.read_header_bytes(reader).await?;
        }
        ttlv::message_len(&self.header, self.max_message_size).map_err(|e| match e {
            TtlvError::MessageTooLarge { size, limit } => ReadError::TooLarge { size, limit },
            e => ReadError::Header(e),
        })
    }

    /// The header bytes of the current message read so far (all of them once
    /// [`MessageReader::header`] succeeded).
    pub fn header_bytes(&self) -> &[u8] {
        &self.header[..self.received]
    }

    /// Reads the whole message into `message` (replacing its content; its allocation is
    /// reused), continuing from the step the reader is at.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        message: &mut Vec<u8>,
    ) -> Result<(), ReadError> {
        let len = self.header(reader).await?;
        message.clear();
        message.extend_from_slice(&self.header);
        let mut filled = HEADER_LEN;
        while filled < len {
            // The buffer grows as bytes arrive (at most READ_CHUNK ahead of them): a peer
            // that announces a megabyte and sends ten bytes holds ten bytes' worth, not
            // the megabyte it claimed.
            let want = (len - filled).min(READ_CHUNK);
            message.reserve(want);
            match (&mut *reader).take(want as u64).read_buf(message).await {
                Ok(0) => return Err(early_eof(filled)),
                Ok(n) => filled += n,
                Err(error) => {
                    return Err(ReadError::Io {
                        received: filled,
                        error,
                    })
                }
            }
        }
        self.received = 0;
        Ok(())
    }

    /// One read of header bytes (cancel safe: what it read is kept).
    async fn read_header_bytes<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<(), ReadError> {
        let received = self.received;
        match reader.read(&mut self.header[received..]).await {
            Ok(0) if received == 0 => Err(ReadError::Closed),
            Ok(0) => Err(early_eof(received)),
            Ok(n) => {
                self.received += n;
                Ok(())
            }
            Err(error) => Err(ReadError::Io { received, error }),
        }
    }
}

/// Reads one whole TTLV message of at most `max_message_size` bytes into `message`.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_message_size: usize,
    message: &mut Vec<u8>,
) -> Result<(), ReadError> {
    MessageReader::new(max_message_size)
        .read(reader, message)
        .await
}

/// The stream ended `received` bytes into a message (worded as tokio's `read_exact` words it).
fn early_eof(received: usize) -> ReadError {
    ReadError::Io {
        received,
        error: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Tag;
    use crate::ttlv::Item;

    fn message() -> Vec<u8> {
        Item::structure(Tag(0x420078), vec![Item::integer(Tag(0x42000D), 1)]).to_ttlv()
    }

    #[test]
    fn splits_a_stream_into_messages_whatever_the_chunking() {
        let one = message();
        let stream: Vec<u8> = [one.clone(), one.clone(), one.clone()].concat();
        for chunk in [1, 3, 8, 13, 100] {
            let mut codec = KmipCodec::default();
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(frame) = codec.decode(&mut buf).expect("valid stream") {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 3, "chunk size {chunk}");
            assert!(frames.iter().all(|f| f[..] == one[..]));
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_the_body_arrives() {
        let mut codec = KmipCodec::new(1024);
        // A Structure claiming 2 GB, and nothing else.
        let mut buf = BytesMut::from(&[0x42, 0x00, 0x78, 0x01, 0x80, 0x00, 0x00, 0x00][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Header(TtlvError::MessageTooLarge { .. }))
        ));
        assert!(buf.capacity() < 4096, "no body buffer was reserved");
    }

    #[test]
    fn an_announced_but_unsent_body_reserves_nothing() {
        let mut codec = KmipCodec::default();
        // A Structure announcing 512 KiB (within the limit), then silence.
        let mut buf = BytesMut::from(&[0x42, 0x00, 0x78, 0x01, 0x00, 0x08, 0x00, 0x00][..]);
        assert!(codec.decode(&mut buf).expect("valid header").is_none());
        assert!(buf.capacity() < 4096, "capacity {}", buf.capacity());
    }

    #[test]
    fn garbage_is_refused_on_its_header() {
        let mut codec = KmipCodec::default();
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::Header(_))));
    }

    /// Serves `pieces` one per read, then ends the stream (or fails, with `then_fail`).
    struct Pieces {
        pieces: std::collections::VecDeque<Vec<u8>>,
        then_fail: bool,
    }

    impl Pieces {
        fn new(pieces: &[&[u8]]) -> Self {
            Self {
                pieces: pieces.iter().map(|p| p.to_vec()).collect(),
                then_fail: false,
            }
        }

        fn failing(pieces: &[&[u8]]) -> Self {
            Self {
                then_fail: true,
                ..Self::new(pieces)
            }
        }
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let result = match self.pieces.pop_front() {
                Some(mut piece) => {
                    let n = piece.len().min(buf.remaining());
                    buf.put_slice(&piece[..n]);
                    if n < piece.len() {
                        self.pieces.push_front(piece.split_off(n));
                    }
                    Ok(())
                }
                None if self.then_fail => {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
                }
                None => Ok(()),
            };
            std::task::Poll::Ready(result)
        }
    }

    #[tokio::test]
    async fn reads_messages_one_at_a_time_whatever_the_chunking() {
        let one = message();
        let stream: Vec<u8> = [one.clone(), one.clone()].concat();
        for chunk in [1, 3, 8, 13, 100] {
            let pieces: Vec<&[u8]> = stream.chunks(chunk).collect();
            let mut source = Pieces::new(&pieces);
            let mut reader = MessageReader::new(1024);
            let mut got = Vec::new();
            for _ in 0..2 {
                reader.read(&mut source, &mut got).await.expect("a message");
                assert_eq!(got, one, "chunk size {chunk}");
            }
            let end = reader
                .read(&mut source, &mut got)
                .await
                .expect_err("the end");
            assert!(matches!(end, ReadError::Closed), "{end:?}");
            assert!(end.nothing_received());
        }
    }

    #[tokio::test]
    async fn the_steps_can_be_taken_apart() {
        let one = message();
        let mut source = Pieces::new(&[&one[..2], &one[2..]]);
        let mut reader = MessageReader::new(1024);
        reader.first_bytes(&mut source).await.expect("first bytes");
        assert_eq!(reader.header_bytes(), &one[..2]);
        assert_eq!(reader.header(&mut source).await.expect("header"), one.len());
        assert_eq!(reader.header_bytes(), &one[..HEADER_LEN]);
        let mut got = Vec::new();
        read_message(&mut Pieces::new(&[&one]), 1024, &mut got)
            .await
            .expect("whole");
        assert_eq!(got, one);
        reader.read(&mut source, &mut got).await.expect("rest");
        assert_eq!(got, one);
    }

    #[tokio::test]
    async fn a_clean_end_and_a_failure_before_any_byte_received_nothing() {
        let mut got = Vec::new();
        let closed = read_message(&mut Pieces::new(&[]), 1024, &mut got).await;
        assert!(matches!(closed, Err(ReadError::Closed)), "{closed:?}");
        let failed = read_message(&mut Pieces::failing(&[]), 1024, &mut got)
            .await
            .expect_err("reset");
        assert!(
            matches!(failed, ReadError::Io { received: 0, .. }),
            "{failed:?}"
        );
        assert!(failed.nothing_received());
    }

    #[tokio::test]
    async fn a_partial_header_or_body_is_an_early_end_after_some_bytes() {
        let one = message();
        let mut got = Vec::new();
        for cut in [3, HEADER_LEN, HEADER_LEN + 5] {
            let e = read_message(&mut Pieces::new(&[&one[..cut]]), 1024, &mut got)
                .await
                .expect_err("cut short");
            match &e {
                ReadError::Io { received, error } => {
                    assert_eq!(*received, cut);
                    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
            assert!(!e.nothing_received());
            let e = read_message(&mut Pieces::failing(&[&one[..cut]]), 1024, &mut got)
                .await
                .expect_err("reset");
            assert!(matches!(e, ReadError::Io { received, .. } if received == cut));
            assert!(!e.nothing_received());
        }
    }

    #[tokio::test]
    async fn an_oversized_or_garbage_header_is_refused_before_its_body() {
        let mut got = Vec::new();
        // A Structure claiming 2 GB, and nothing else: refused without waiting for a body.
        let huge = [0x42, 0x00, 0x78, 0x01, 0x80, 0x00, 0x00, 0x00];
        let e = read_message(&mut Pieces::new(&[&huge]), 1024, &mut got)
            .await
            .expect_err("too large");
        assert!(
            matches!(e, ReadError::TooLarge { limit: 1024, .. }),
            "{e:?}"
        );
        assert!(got.capacity() < 4096, "no body buffer was reserved");
        // Exactly at the limit is accepted.
        let one = message();
        read_message(&mut Pieces::new(&[&one]), one.len(), &mut got)
            .await
            .expect("at the limit");
        let e = read_message(
            &mut Pieces::new(&[b"GET / HTTP/1.1\r\n\r\n"]),
            1024,
            &mut got,
        )
        .await
        .expect_err("garbage");
        assert!(matches!(e, ReadError::Header(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_body_is_buffered_as_it_arrives_not_as_announced() {
        // A Structure announcing 1 MiB (minus the header), then 100 bytes, then the end.
        let len = 1024 * 1024 - HEADER_LEN;
        let mut announced = vec![0x42, 0x00, 0x78, 0x01];
        announced.extend_from_slice(&(len as u32).to_be_bytes());
        announced.extend_from_slice(&[0u8; 100]);
        let mut got = Vec::new();
        let e = read_message(&mut Pieces::new(&[&announced]), 2 * 1024 * 1024, &mut got)
            .await
            .expect_err("cut short");
        assert!(matches!(e, ReadError::Io { received, .. } if received == HEADER_LEN + 100));
        assert!(
            got.capacity() < 64 * 1024,
            "reserved {} bytes for 108 received",
            got.capacity()
        );
    }
}
