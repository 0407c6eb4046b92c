//! KMIP protocol versions, as carried in every message header.

use std::fmt;

/// A KMIP protocol version (`Protocol Version Major` / `Protocol Version Minor`).
///
/// Ordered, so `v >= ProtocolVersion::V2_0` reads as "2.0 or later".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: i32,
    pub minor: i32,
}

impl ProtocolVersion {
    pub const V1_0: Self = Self::new(1, 0);
    pub const V1_1: Self = Self::new(1, 1);
    pub const V1_2: Self = Self::new(1, 2);
    pub const V1_3: Self = Self::new(1, 3);
    pub const V1_4: Self = Self::new(1, 4);
    pub const V2_0: Self = Self::new(2, 0);
    pub const V2_1: Self = Self::new(2, 1);

    /// Every version this library speaks, newest first (the order DiscoverVersions answers in).
    pub const SUPPORTED: [Self; 7] = [
        Self::V2_1,
        Self::V2_0,
        Self::V1_4,
        Self::V1_3,
        Self::V1_2,
        Self::V1_1,
        Self::V1_0,
    ];

    pub const fn new(major: i32, minor: i32) -> Self {
        Self { major, minor }
    }

    /// KMIP 2.x replaced `Attribute`/`TemplateAttribute` with the typed `Attributes`
    /// structure; everything version-dependent in the message layer keys off this.
    pub fn uses_typed_attributes(self) -> bool {
        self.major >= 2
    }

    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl fmt::Debug for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KMIP {self}")
    }
}
