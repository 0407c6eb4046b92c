//! A tokio codec that cuts a byte stream into KMIP messages.
//!
//! The 8-byte header of each message is checked (Structure type, 8-aligned length, size
//! limit) before a single byte of the body is buffered, so an oversized or garbage header
//! is refused at once instead of making the reader wait for — or reserve — gigabytes.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::ttlv::{self, TtlvError, DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN};

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
}
