//! Why an operation failed, as the client is told: every mapping of an error to a KMIP
//! Result Reason the engine makes lives here — [`OpError`] and its constructors, the store's
//! and the cryptographic layer's errors, a stored object that does not decode, a payload
//! that did not decode, and [`OpError::for_version`], the one place reasons are adapted to
//! what the client's protocol version defines.

use kmip::message::MessageError;
use kmip::spec::ResultReason;
use kmip::ProtocolVersion;

use crate::asymmetric::AsymError;
use crate::cryptosvc::CryptoError;
use crate::store::StoreError;

/// Why one operation failed: the Result Reason and a message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub reason: ResultReason,
    pub message: String,
}

impl OpError {
    pub fn new(reason: ResultReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// The answer for a missing object — and, identically, for another tenant's object.
    /// Object Not Found is the 2.x reason (KMIP 2.1 Tables 198, 216, 222, …); 1.x clients get
    /// Item Not Found from [`OpError::for_version`].
    pub fn not_found(uid: &str) -> Self {
        Self::new(
            ResultReason::ObjectNotFound,
            format!("object {uid} not found"),
        )
    }

    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(ResultReason::InvalidField, message)
    }

    /// A stored object (attributes or material) that does not decode or unwrap: the
    /// server's fault, never the client's; the detail is for the log, not the answer.
    pub fn unreadable() -> Self {
        Self::new(ResultReason::GeneralFailure, "stored object is unreadable")
    }

    /// A request payload that did not decode: the reason the KMIP decoder assigns
    /// ([`MessageError::result_reason`]).
    pub fn malformed(e: &MessageError) -> Self {
        Self::new(e.result_reason(), e.to_string())
    }

    /// The reason as the client's version knows it: reasons added after the request's
    /// version fall back to the closest older one.
    pub fn for_version(&self, v: ProtocolVersion) -> ResultReason {
        // KMIP 2.0 defines Wrong Key Lifecycle State, but its profile test cases (CS-BC-M-14,
        // AKLC-M-2, CS-AC-M-8) expect Permission Denied where 2.1 expects it, and 2.0's error
        // tables list Permission Denied for the same operations (Encrypt, Decrypt, Sign,
        // Destroy, Activate); 2.0 clients get the reason they were written against.
        if self.reason == ResultReason::WrongKeyLifecycleState && v < ProtocolVersion::V2_1 {
            return ResultReason::PermissionDenied;
        }
        if self.reason.is_defined_in(v) {
            return self.reason;
        }
        // The 1.x error tables (KMIP 1.4 §11) name these reasons for the same conditions.
        let fallback = match self.reason {
            ResultReason::ObjectDestroyed
            | ResultReason::ObjectNotFound
            | ResultReason::AttributeNotFound
            | ResultReason::AttributeInstanceNotFound => ResultReason::ItemNotFound,
            // 1.x answers Permission Denied for an object in the wrong state or with the
            // wrong usage (KMIP 1.4 §11.20-11.22, 11.30).
            ResultReason::AttributeReadOnly
            | ResultReason::WrongKeyLifecycleState
            | ResultReason::IncompatibleCryptographicUsageMask
            | ResultReason::UsageLimitExceeded => ResultReason::PermissionDenied,
            ResultReason::AttributeSingleValued | ResultReason::MultiValuedAttribute => {
                ResultReason::IllegalOperation
            }
            ResultReason::InvalidDataType
            | ResultReason::InvalidObjectType
            | ResultReason::InvalidAttribute
            | ResultReason::InvalidAttributeValue => ResultReason::InvalidField,
            _ => ResultReason::GeneralFailure,
        };
        if fallback.is_defined_in(v) {
            fallback
        } else {
            ResultReason::GeneralFailure
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        // Store messages name no key material; they may name the database, so keep them
        // generic for the client and log the detail.
        tracing::error!(error = %e, "store failure");
        match e {
            StoreError::NotFound(uid) => Self::not_found(&uid),
            _ => Self::new(ResultReason::GeneralFailure, "storage unavailable"),
        }
    }
}

impl From<CryptoError> for OpError {
    fn from(e: CryptoError) -> Self {
        let reason = match e {
            CryptoError::AuthenticationFailed | CryptoError::BadPadding => {
                ResultReason::CryptographicFailure
            }
            // A field the mode requires is absent from the request: the message is incomplete
            // (KMIP 1.4 §11.1; Invalid Message is among the Decrypt reasons of 2.1 Table 198),
            // which is what the CS-BC test cases (M-11, M-12, M-13) expect in 1.4, 2.0 and 2.1.
            CryptoError::MissingIv | CryptoError::MissingTag => ResultReason::InvalidMessage,
            _ => ResultReason::InvalidField,
        };
        OpError::new(reason, e.to_string())
    }
}

impl From<AsymError> for OpError {
    fn from(e: AsymError) -> Self {
        let reason = match e {
            AsymError::Failed(_) => ResultReason::CryptographicFailure,
            AsymError::Format(_) => ResultReason::KeyFormatTypeNotSupported,
            AsymError::Unsupported(_) | AsymError::BadKey(_) => ResultReason::InvalidField,
        };
        OpError::new(reason, e.to_string())
    }
}
