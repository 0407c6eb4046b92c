//! Request and response payloads of the operations this library types. Field order is the
//! spec's; fields that changed shape between 1.x and 2.x use the version-aware kinds of
//! [`super::attributes`].

use crate::spec::{
    CryptographicUsageMask, InteropFunction, KeyCompressionType, KeyFormatType, KeyWrapType,
    ObjectGroupMember, ObjectType, Operation, QueryFunction, RevocationReasonCode,
    ValidityIndicator,
};
use crate::ttlv::Item;

use super::attributes::{Attribute, AttributeName, Attributes, CryptographicParameters};
use super::codec::{kmip_struct, ByteString, DateTime, Interval};
use super::objects::ManagedObject;
use super::UniqueIdentifier;
use crate::ProtocolVersion;

// ---------------------------------------------------------------- Discover Versions, Query

kmip_struct! {
    pub struct DiscoverVersionsRequest {
        protocol_versions: rep ProtocolVersion = PROTOCOL_VERSION,
    }
}

kmip_struct! {
    pub struct DiscoverVersionsResponse {
        protocol_versions: rep ProtocolVersion = PROTOCOL_VERSION,
    }
}

kmip_struct! {
    pub struct QueryRequest {
        query_functions: rep QueryFunction = QUERY_FUNCTION,
    }
}

kmip_struct! {
    /// Query response. Server Information and the capability structures are kept as item
    /// trees; their content is server-specific.
    #[derive(Default)]
    pub struct QueryResponse {
        operations: rep Operation = OPERATION,
        object_types: rep ObjectType = OBJECT_TYPE,
        vendor_identification: opt String = VENDOR_IDENTIFICATION,
        server_information: opt Item = SERVER_INFORMATION,
        application_namespaces: rep String = APPLICATION_NAMESPACE,
        extension_information: rep Item = EXTENSION_INFORMATION,
        attestation_types: rep super::RawEnum = ATTESTATION_TYPE,
        rng_parameters: rep Item = RNG_PARAMETERS,
        profile_information: rep Item = PROFILE_INFORMATION,
        validation_information: rep Item = VALIDATION_INFORMATION,
        capability_information: rep Item = CAPABILITY_INFORMATION,
        client_registration_methods: rep super::RawEnum = CLIENT_REGISTRATION_METHOD,
        defaults_information: opt Item = DEFAULTS_INFORMATION,
        protection_storage_masks: rep Item = PROTECTION_STORAGE_MASKS,
    }
}

// ---------------------------------------------------------------- Create, Register

kmip_struct! {
    pub struct CreateRequest {
        object_type: req ObjectType = OBJECT_TYPE,
        attributes: attrs Attributes = ATTRIBUTES,
        protection_storage_masks: opt Item = PROTECTION_STORAGE_MASKS,
    }
}

kmip_struct! {
    pub struct CreateResponse {
        object_type: req ObjectType = OBJECT_TYPE,
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        /// 1.x only: attributes the server set implicitly.
        attributes: attrs Attributes = ATTRIBUTES,
    }
}

kmip_struct! {
    pub struct RegisterRequest {
        object_type: req ObjectType = OBJECT_TYPE,
        attributes: attrs Attributes = ATTRIBUTES,
        object: object ManagedObject = OBJECT_TYPE,
        protection_storage_masks: opt Item = PROTECTION_STORAGE_MASKS,
    }
}

kmip_struct! {
    pub struct RegisterResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        attributes: attrs Attributes = ATTRIBUTES,
    }
}

kmip_struct! {
    /// Create Key Pair: attributes for both keys, and for each key alone (1.x sends them as
    /// Common / Private Key / Public Key Template-Attribute).
    #[derive(Default)]
    pub struct CreateKeyPairRequest {
        common_attributes: pair_attrs Attributes = COMMON_ATTRIBUTES,
        private_key_attributes: pair_attrs Attributes = PRIVATE_KEY_ATTRIBUTES,
        public_key_attributes: pair_attrs Attributes = PUBLIC_KEY_ATTRIBUTES,
        common_protection_storage_masks: opt Item = COMMON_PROTECTION_STORAGE_MASKS,
        private_protection_storage_masks: opt Item = PRIVATE_PROTECTION_STORAGE_MASKS,
        public_protection_storage_masks: opt Item = PUBLIC_PROTECTION_STORAGE_MASKS,
    }
}

kmip_struct! {
    pub struct CreateKeyPairResponse {
        private_key_unique_identifier: req UniqueIdentifier = PRIVATE_KEY_UNIQUE_IDENTIFIER,
        public_key_unique_identifier: req UniqueIdentifier = PUBLIC_KEY_UNIQUE_IDENTIFIER,
        /// 1.x only: attributes the server set implicitly.
        private_key_attributes: pair_attrs Attributes = PRIVATE_KEY_ATTRIBUTES,
        public_key_attributes: pair_attrs Attributes = PUBLIC_KEY_ATTRIBUTES,
    }
}

kmip_struct! {
    /// Re-key Key Pair: a new pair replacing the private key named and its public key.
    #[derive(Default)]
    pub struct ReKeyKeyPairRequest {
        private_key_unique_identifier: opt UniqueIdentifier = PRIVATE_KEY_UNIQUE_IDENTIFIER,
        offset: opt Interval = OFFSET,
        common_attributes: pair_attrs Attributes = COMMON_ATTRIBUTES,
        private_key_attributes: pair_attrs Attributes = PRIVATE_KEY_ATTRIBUTES,
        public_key_attributes: pair_attrs Attributes = PUBLIC_KEY_ATTRIBUTES,
        common_protection_storage_masks: opt Item = COMMON_PROTECTION_STORAGE_MASKS,
        private_protection_storage_masks: opt Item = PRIVATE_PROTECTION_STORAGE_MASKS,
        public_protection_storage_masks: opt Item = PUBLIC_PROTECTION_STORAGE_MASKS,
    }
}

// ---------------------------------------------------------------- Get, attributes

kmip_struct! {
    #[derive(Default)]
    pub struct GetRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        key_format_type: opt KeyFormatType = KEY_FORMAT_TYPE,
        key_wrap_type: opt KeyWrapType = KEY_WRAP_TYPE,
        key_compression_type: opt KeyCompressionType = KEY_COMPRESSION_TYPE,
        key_wrapping_specification: opt Item = KEY_WRAPPING_SPECIFICATION,
    }
}

impl GetRequest {
    /// A Get of `uid` with the server's default format (no wrapping, no compression).
    pub fn of(uid: &str) -> Self {
        Self {
            unique_identifier: Some(UniqueIdentifier::from(uid)),
            ..Self::default()
        }
    }
}

kmip_struct! {
    pub struct GetResponse {
        object_type: req ObjectType = OBJECT_TYPE,
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        object: object ManagedObject = OBJECT_TYPE,
    }
}

kmip_struct! {
    pub struct GetAttributesRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        /// Empty means all attributes.
        attribute_names: attr_refs AttributeName = ATTRIBUTE_REFERENCE,
    }
}

kmip_struct! {
    pub struct GetAttributesResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        attributes: attr_list Attributes = ATTRIBUTES,
    }
}

kmip_struct! {
    pub struct GetAttributeListRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
    }
}

kmip_struct! {
    pub struct GetAttributeListResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        attribute_names: attr_refs AttributeName = ATTRIBUTE_REFERENCE,
    }
}

kmip_struct! {
    /// Add Attribute: 1.x `Attribute`, 2.x `New Attribute`.
    pub struct AddAttributeRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        attribute: attr_one Attribute = NEW_ATTRIBUTE,
    }
}

kmip_struct! {
    /// Modify Attribute: 1.x sends the new value as `Attribute`; 2.x may name the
    /// instance to change in `Current Attribute`.
    pub struct ModifyAttributeRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        current_attribute: attr_one Attribute = CURRENT_ATTRIBUTE,
        attribute: attr_one Attribute = NEW_ATTRIBUTE,
    }
}

kmip_struct! {
    /// Delete Attribute: 1.x by name and index, 2.x by `Current Attribute` or reference.
    pub struct DeleteAttributeRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        current_attribute: attr_one Attribute = CURRENT_ATTRIBUTE,
        attribute_names: attr_refs AttributeName = ATTRIBUTE_REFERENCE,
        attribute_index: opt i32 = ATTRIBUTE_INDEX,
    }
}

kmip_struct! {
    /// Set Attribute (2.0+).
    pub struct SetAttributeRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        attribute: attr_one Attribute = NEW_ATTRIBUTE,
    }
}

kmip_struct! {
    /// Response to Add/Modify/Delete/Set Attribute; 1.x echoes the attribute.
    pub struct AttributeChangeResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        attribute: attr_v1 Attribute = ATTRIBUTE,
    }
}

// ---------------------------------------------------------------- Locate

kmip_struct! {
    pub struct LocateRequest {
        maximum_items: opt i32 = MAXIMUM_ITEMS,
        offset_items: opt i32 = OFFSET_ITEMS,
        storage_status_mask: opt i32 = STORAGE_STATUS_MASK,
        object_group_member: opt ObjectGroupMember = OBJECT_GROUP_MEMBER,
        /// Filters. A 2.x Locate may omit them: it then matches every object.
        attributes: attr_list Attributes = ATTRIBUTES,
    }
}

kmip_struct! {
    pub struct LocateResponse {
        located_items: opt i32 = LOCATED_ITEMS,
        unique_identifiers: rep UniqueIdentifier = UNIQUE_IDENTIFIER,
    }
}

// ---------------------------------------------------------------- lifecycle

kmip_struct! {
    /// Request of the operations that take only an optional identifier (Activate, Destroy,
    /// Get Attribute List, ...).
    pub struct IdRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
    }
}

kmip_struct! {
    /// Response of the operations that return only the identifier.
    pub struct IdResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
    }
}

kmip_struct! {
    pub struct RevocationReason {
        code: req RevocationReasonCode = REVOCATION_REASON_CODE,
        message: opt String = REVOCATION_MESSAGE,
    }
}

kmip_struct! {
    pub struct RevokeRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        revocation_reason: req RevocationReason = REVOCATION_REASON,
        compromise_occurrence_date: opt DateTime = COMPROMISE_OCCURRENCE_DATE,
    }
}

kmip_struct! {
    pub struct ReKeyRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        offset: opt Interval = OFFSET,
        attributes: attrs Attributes = ATTRIBUTES,
        protection_storage_masks: opt Item = PROTECTION_STORAGE_MASKS,
    }
}

kmip_struct! {
    pub struct ReKeyResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        attributes: attrs Attributes = ATTRIBUTES,
    }
}

// ---------------------------------------------------------------- cryptographic services

kmip_struct! {
    pub struct EncryptRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        cryptographic_parameters: opt CryptographicParameters = CRYPTOGRAPHIC_PARAMETERS,
        data: opt ByteString = DATA,
        iv_counter_nonce: opt ByteString = IV_COUNTER_NONCE,
        correlation_value: opt ByteString = CORRELATION_VALUE,
        init_indicator: opt bool = INIT_INDICATOR,
        final_indicator: opt bool = FINAL_INDICATOR,
        authenticated_encryption_additional_data: opt ByteString = AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA,
    }
}

kmip_struct! {
    pub struct EncryptResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        data: opt ByteString = DATA,
        iv_counter_nonce: opt ByteString = IV_COUNTER_NONCE,
        correlation_value: opt ByteString = CORRELATION_VALUE,
        authenticated_encryption_tag: opt ByteString = AUTHENTICATED_ENCRYPTION_TAG,
    }
}

kmip_struct! {
    #[derive(Default)]
    pub struct DecryptRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        cryptographic_parameters: opt CryptographicParameters = CRYPTOGRAPHIC_PARAMETERS,
        data: opt ByteString = DATA,
        iv_counter_nonce: opt ByteString = IV_COUNTER_NONCE,
        correlation_value: opt ByteString = CORRELATION_VALUE,
        init_indicator: opt bool = INIT_INDICATOR,
        final_indicator: opt bool = FINAL_INDICATOR,
        authenticated_encryption_additional_data: opt ByteString = AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA,
        authenticated_encryption_tag: opt ByteString = AUTHENTICATED_ENCRYPTION_TAG,
    }
}

kmip_struct! {
    pub struct DecryptResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        data: opt ByteString = DATA,
        correlation_value: opt ByteString = CORRELATION_VALUE,
    }
}

kmip_struct! {
    pub struct MacRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        cryptographic_parameters: opt CryptographicParameters = CRYPTOGRAPHIC_PARAMETERS,
        data: opt ByteString = DATA,
        correlation_value: opt ByteString = CORRELATION_VALUE,
        init_indicator: opt bool = INIT_INDICATOR,
        final_indicator: opt bool = FINAL_INDICATOR,
    }
}

kmip_struct! {
    pub struct MacResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        mac_data: opt ByteString = MAC_DATA,
        correlation_value: opt ByteString = CORRELATION_VALUE,
    }
}

kmip_struct! {
    #[derive(Default)]
    pub struct SignRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        cryptographic_parameters: opt CryptographicParameters = CRYPTOGRAPHIC_PARAMETERS,
        data: opt ByteString = DATA,
        /// 1.4+: the digest of the data, signed as given.
        digested_data: opt ByteString = DIGESTED_DATA,
        correlation_value: opt ByteString = CORRELATION_VALUE,
        init_indicator: opt bool = INIT_INDICATOR,
        final_indicator: opt bool = FINAL_INDICATOR,
    }
}

kmip_struct! {
    pub struct SignResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        signature_data: opt ByteString = SIGNATURE_DATA,
        correlation_value: opt ByteString = CORRELATION_VALUE,
    }
}

kmip_struct! {
    #[derive(Default)]
    pub struct SignatureVerifyRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        cryptographic_parameters: opt CryptographicParameters = CRYPTOGRAPHIC_PARAMETERS,
        data: opt ByteString = DATA,
        digested_data: opt ByteString = DIGESTED_DATA,
        signature_data: opt ByteString = SIGNATURE_DATA,
        correlation_value: opt ByteString = CORRELATION_VALUE,
        init_indicator: opt bool = INIT_INDICATOR,
        final_indicator: opt bool = FINAL_INDICATOR,
    }
}

kmip_struct! {
    pub struct SignatureVerifyResponse {
        unique_identifier: req UniqueIdentifier = UNIQUE_IDENTIFIER,
        validity_indicator: opt ValidityIndicator = VALIDITY_INDICATOR,
        data: opt ByteString = DATA,
        correlation_value: opt ByteString = CORRELATION_VALUE,
    }
}

kmip_struct! {
    pub struct RngRetrieveRequest {
        data_length: req i32 = DATA_LENGTH,
    }
}

kmip_struct! {
    pub struct RngRetrieveResponse {
        data: req ByteString = DATA,
    }
}

// ---------------------------------------------------------------- Check, Log, Interop

kmip_struct! {
    /// Check (KMIP 2.1 §6.1.7): whether the object may be used as described.
    pub struct CheckRequest {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        usage_limits_count: opt i64 = USAGE_LIMITS_COUNT,
        cryptographic_usage_mask: opt CryptographicUsageMask = CRYPTOGRAPHIC_USAGE_MASK,
        lease_time: opt Interval = LEASE_TIME,
    }
}

kmip_struct! {
    /// Check response: the identifier, and on a refusal the values that were refused.
    pub struct CheckResponse {
        unique_identifier: opt UniqueIdentifier = UNIQUE_IDENTIFIER,
        usage_limits_count: opt i64 = USAGE_LIMITS_COUNT,
        cryptographic_usage_mask: opt CryptographicUsageMask = CRYPTOGRAPHIC_USAGE_MASK,
        lease_time: opt Interval = LEASE_TIME,
    }
}

kmip_struct! {
    /// Log (KMIP 2.0+): a message for the server's log.
    pub struct LogRequest {
        log_message: req String = LOG_MESSAGE,
    }
}

kmip_struct! {
    /// The empty response payload of Log and Interop.
    pub struct EmptyResponse {}
}

kmip_struct! {
    /// Interop (KMIP 2.0+): the start, end or reset of an interoperability test case.
    pub struct InteropRequest {
        interop_function: req InteropFunction = INTEROP_FUNCTION,
        interop_identifier: req String = INTEROP_IDENTIFIER,
    }
}

/// Declares the request and response payload enums: one variant per typed operation, the
/// operation each variant belongs to, and the dispatch from operation code to decoder.
macro_rules! payloads {
    ($( $op:ident => $req:ty, $resp:ty; )*) => {
        /// A typed request payload.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum RequestPayload {
            $( $op($req), )*
        }

        /// A typed response payload.
        #[derive(Clone, Debug, PartialEq)]
        #[non_exhaustive]
        pub enum ResponsePayload {
            $( $op($resp), )*
        }

        impl RequestPayload {
            pub fn operation(&self) -> Operation {
                match self { $( Self::$op(_) => Operation::$op, )* }
            }
            /// Decodes the payload of `operation`; `Ok(None)` when this library has no
            /// typed payload for it.
            pub fn decode(
                operation: Operation,
                item: &Item,
                v: crate::ProtocolVersion,
            ) -> Result<Option<Self>, super::MessageError> {
                use super::codec::TtlvValue;
                Ok(Some(match operation {
                    $( Operation::$op => Self::$op(<$req>::decode(item, v)?), )*
                    _ => return Ok(None),
                }))
            }
            pub fn encode(&self, v: crate::ProtocolVersion) -> Item {
                use super::codec::TtlvValue;
                match self { $( Self::$op(p) => p.encode(crate::spec::Tag::REQUEST_PAYLOAD, v), )* }
            }
        }

        impl ResponsePayload {
            pub fn operation(&self) -> Operation {
                match self { $( Self::$op(_) => Operation::$op, )* }
            }
            pub fn decode(
                operation: Operation,
                item: &Item,
                v: crate::ProtocolVersion,
            ) -> Result<Option<Self>, super::MessageError> {
                use super::codec::TtlvValue;
                Ok(Some(match operation {
                    $( Operation::$op => Self::$op(<$resp>::decode(item, v)?), )*
                    _ => return Ok(None),
                }))
            }
            pub fn encode(&self, v: crate::ProtocolVersion) -> Item {
                use super::codec::TtlvValue;
                match self { $( Self::$op(p) => p.encode(crate::spec::Tag::RESPONSE_PAYLOAD, v), )* }
            }
        }
    };
}

payloads! {
    DiscoverVersions => DiscoverVersionsRequest, DiscoverVersionsResponse;
    Query => QueryRequest, QueryResponse;
    Create => CreateRequest, CreateResponse;
    CreateKeyPair => CreateKeyPairRequest, CreateKeyPairResponse;
    Register => RegisterRequest, RegisterResponse;
    Get => GetRequest, GetResponse;
    GetAttributes => GetAttributesRequest, GetAttributesResponse;
    GetAttributeList => GetAttributeListRequest, GetAttributeListResponse;
    AddAttribute => AddAttributeRequest, AttributeChangeResponse;
    ModifyAttribute => ModifyAttributeRequest, AttributeChangeResponse;
    DeleteAttribute => DeleteAttributeRequest, AttributeChangeResponse;
    SetAttribute => SetAttributeRequest, AttributeChangeResponse;
    Locate => LocateRequest, LocateResponse;
    Activate => IdRequest, IdResponse;
    Revoke => RevokeRequest, IdResponse;
    Destroy => IdRequest, IdResponse;
    Encrypt => EncryptRequest, EncryptResponse;
    Decrypt => DecryptRequest, DecryptResponse;
    Mac => MacRequest, MacResponse;
    Sign => SignRequest, SignResponse;
    SignatureVerify => SignatureVerifyRequest, SignatureVerifyResponse;
    ReKey => ReKeyRequest, ReKeyResponse;
    ReKeyKeyPair => ReKeyKeyPairRequest, CreateKeyPairResponse;
    RngRetrieve => RngRetrieveRequest, RngRetrieveResponse;
    Check => CheckRequest, CheckResponse;
    Log => LogRequest, EmptyResponse;
    Interop => InteropRequest, EmptyResponse;
}
